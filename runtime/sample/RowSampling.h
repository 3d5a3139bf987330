// What a backend needs to sample one row of logits: the fixed-size layout
// shared by the host (sampleRow, the CPU backend) and the CUDA kernel
// (runtime/backend/cuda/sample_rows.cu). The definition of each step is in
// runtime/sample/Sampler.h. Plain types only: NVRTC compiles this file too.
#pragma once

namespace llmc::sample {

constexpr int kMaxTopLogprobs = 20;

/// A change to one token's logit before anything else (step 0 and the banned
/// tokens of step 1): a positive logit is divided by `repetition`, a negative
/// one multiplied by it; then `subtract` is subtracted (+inf bans the token).
struct LogitAdjustment {
  int token;
  float repetition;  // 1: none
  float subtract;    // 0: none
};

/// One row's parameters. Its adjustments are adjustments[first_adjustment,
/// first_adjustment + num_adjustments), one per token at most.
struct RowSampling {
  double u;  // the uniform draw in [0, 1) of step 5 (unused when greedy)
  float temperature;  // 0: greedy
  float top_p;        // 1: off
  float min_p;        // 0: off
  int top_k;          // <= 0: off
  int logprobs;       // top logprobs to report, 0..kMaxTopLogprobs
  int first_adjustment;
  int num_adjustments;
};

/// One row's result.
struct RowSample {
  int token;  // -1: no token can be sampled (every logit -inf or NaN)
  float logprob;  // the chosen token's raw logprob
  int num_top;    // entries of top_tokens / top_logprobs, most probable first
  int top_tokens[kMaxTopLogprobs];
  float top_logprobs[kMaxTopLogprobs];
};

// The host compiler and NVRTC must agree on these layouts.
static_assert(sizeof(LogitAdjustment) == 12 && sizeof(RowSampling) == 40 &&
              sizeof(RowSample) == 12 + 8 * kMaxTopLogprobs);

} // namespace llmc::sample
