// Token sampling: one row of fp32 logits in, one token out. A Sampler (one
// per sequence) holds what is the host's: the RNG and the penalties' history.
// It describes each row as a RowSampling plus logit adjustments
// (runtime/sample/RowSampling.h), and a backend samples every row of a
// forward where its logits are (Backend::sample): on the CPU with sampleRow()
// below, on a GPU with a kernel that implements the same steps, so only the
// chosen tokens and the requested logprobs come back to the host.
//
// These are the steps, in this order (Hugging Face's order of warpers):
//
//  0. Penalties (vLLM's definitions), over this Sampler's history:
//     repetition_penalty r divides positive logits and multiplies negative
//     ones of every token seen in the prompt or the output; then
//     frequency_penalty f and presence_penalty p subtract f * count and p
//     (once) from each token the output holds. The logprobs of step 2 are
//     those of the penalised logits.
//  1. Masking. Banned tokens and NaN logits become -inf. A +inf logit is taken
//     as the limit of softmax: the +inf tokens share all the probability
//     equally, every other token gets none. If every logit is -inf (or the row
//     is empty), no token can be sampled.
//  2. Logprobs, from the masked logits before temperature or filtering (vLLM's
//     default "raw logprobs"): log_softmax in double. The result carries the
//     chosen token's logprob and the `logprobs` most probable tokens, sorted
//     by logprob descending, ties by lower token id; tokens at -inf are never
//     listed, so the list is shorter when fewer than `logprobs` remain.
//  3. temperature == 0: greedy argmax, ties to the lowest token id. The RNG is
//     not used. (vLLM also treats temperatures below 1e-5 as greedy; here only
//     0 does, a tiny positive temperature samples among exact ties.)
//  4. Otherwise every token gets the weight exp((logit - max_logit) / T),
//     computed in double, and the tokens are ordered by logit descending, ties
//     by lower id ("the order"). Then, each keeping a prefix of the order:
//       top-k  (top_k > 0): keep the first top_k tokens. Exactly k: a tie at
//              the boundary keeps the lower ids (HF/vLLM keep every tied
//              token), so top_k == 1 is greedy at any temperature.
//       top-p  (top_p < 1): keep the shortest prefix whose weight reaches
//              top_p times the weight left by top-k (always >= 1 token).
//       min-p  (min_p > 0): drop tokens with weight < min_p * max weight.
//     (vLLM v1 applies min-p before top-k/top-p; the results differ only when
//     min-p and top-p are both active.)
//  5. Sampling by inverse CDF: u = (rng() >> 11) * 2^-53 from a
//     std::mt19937_64 (one draw per non-greedy call), t = u * (total weight
//     kept); the token chosen is the first one in the order whose cumulative
//     weight exceeds t (the last kept token if rounding leaves t past the
//     total). Everything is exactly specified, so a seeded sequence gives the
//     same tokens on every platform up to rounding: the last bit of exp, and
//     on a GPU the order in which the double sums are added. A different
//     token needs a cut or a draw within that rounding of a token boundary.
//
// Cost: O(V) per row (V = vocabulary size), no sort. The cut of each filter and
// the sampled token are found by a radix descent over the logits' bit
// patterns (see selectInOrder in Sampler.cpp) that sums every bucket in
// token-id order, so no result depends on a std::sort/nth_element
// implementation, and the same descent maps onto a GPU.
#pragma once

#include "runtime/sample/RowSampling.h"

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <vector>

namespace llmc::sample {

struct SamplingParams {
  float temperature = 1.0f;            // 0 = greedy
  int top_k = 0;                       // 0 or -1 = off
  float top_p = 1.0f;                  // (0, 1]; 1 = off
  float min_p = 0.0f;                  // [0, 1]; 0 = off
  std::optional<uint64_t> seed;        // unset: the Sampler's default_seed
  int logprobs = 0;                    // top-N logprobs besides the chosen token's (0..20)
  std::vector<int32_t> banned_tokens;  // masked to -inf before anything (min_tokens: EOS)
  float presence_penalty = 0.0f;       // [-2, 2]; 0 = off
  float frequency_penalty = 0.0f;      // [-2, 2]; 0 = off
  float repetition_penalty = 1.0f;     // (0, 2]; 1 = off

  bool hasPenalties() const {
    return presence_penalty != 0 || frequency_penalty != 0 || repetition_penalty != 1;
  }
};

/// Throws std::invalid_argument, naming the parameter, for: temperature < 0 or
/// NaN, top_p outside (0, 1], min_p outside [0, 1], top_k < -1, logprobs
/// outside [0, 20], a banned token outside [0, vocab_size), presence or
/// frequency penalty outside [-2, 2], repetition penalty outside (0, 2].
void validate(const SamplingParams& params, int vocab_size);

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct SampleResult {
  int32_t token;                  // the sampled token
  float logprob;                  // its raw logprob (step 2)
  std::vector<TokenLogprob> top;  // the params.logprobs most probable tokens
};

/// Steps 1-5 on one row after its adjustments (step 0 and banned tokens),
/// which are applied to `logits` in place; adjustments outside the row are
/// ignored. The host's implementation of what a backend runs per row: the CPU
/// backend calls it, the CUDA kernel implements the same steps. Returns token
/// -1 when no token can be sampled.
RowSample sampleRow(std::span<float> logits, const RowSampling& row,
                    std::span<const LogitAdjustment> adjustments);

/// The result of a row in the form requests report it.
SampleResult toSampleResult(const RowSample& row);

/// One per sequence: owns the RNG and the history of the penalties, so a
/// seeded sequence is reproducible whichever backend samples its rows.
class Sampler {
 public:
  /// Validates params (all but the vocabulary bound of banned tokens, which
  /// sample() checks). The RNG is seeded with params.seed, or default_seed
  /// when that is unset. `prompt` feeds the repetition penalty.
  explicit Sampler(const SamplingParams& params, uint64_t default_seed,
                   std::span<const int32_t> prompt = {});

  /// The next row's parameters: draws u from the RNG unless greedy, and
  /// appends the row's adjustments (penalties over the history, the banned
  /// tokens and `extra_banned`) to `adjustments`, one per token.
  RowSampling prepare(std::vector<LogitAdjustment>& adjustments,
                      std::span<const int32_t> extra_banned = {});
  /// Records the token chosen for the row prepare() described: it joins the
  /// output history of the penalties.
  void accept(int32_t token);

  /// prepare(), sampleRow() and accept() on a row of logits on the host.
  /// Throws std::invalid_argument for a banned token outside [0,
  /// logits.size()), std::runtime_error when no token can be sampled.
  SampleResult sample(std::span<const float> logits);

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int32_t> promptTokens_;  // sorted, unique (repetition penalty)
  std::vector<std::pair<int32_t, int32_t>> outputCounts_;  // token -> count, sorted by token
};

}  // namespace llmc::sample
