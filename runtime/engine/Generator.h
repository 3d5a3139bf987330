// A small engine loop: runs several generation requests at once with ragged
// prefill, chunked prefill (a long prompt over several forwards, within the
// token budget of each forward) and decode, all through one plan.
#pragma once

#include "runtime/engine/Executor.h"
#include "runtime/kv/BlockManager.h"
#include "runtime/sample/Sampler.h"
#include "runtime/text/Tokenizer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace llmc::runtime {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  sample::SamplingParams sampling;
  int max_tokens = 16;
  int min_tokens = 0;       // end-of-sequence tokens are masked until this many exist
  bool ignore_eos = false;  // generate max_tokens whatever comes
  std::vector<int32_t> stop_token_ids;  // end the sequence like EOS (also kept in tokens)
  std::vector<std::string> stop;        // stop strings (need a tokenizer); not part of text
};

struct GenerationResult {
  std::vector<int32_t> tokens;               // generated tokens (an ending EOS included)
  std::vector<sample::SampleResult> samples;  // one per generated token, with logprobs
  std::string finish_reason;                 // "stop" (EOS, stop token or string) or "length"
  std::string text;  // the detokenized output up to any stop string (with a tokenizer)
};

struct GeneratorOptions {
  int64_t tokens_per_forward = 0;  // token budget of one forward; 0: the executor's maximum
  std::vector<int32_t> eos_token_ids;
  uint64_t seed = 0;  // for requests without a seed of their own
  /// Detokenizes outputs (GenerationResult::text) and matches stop strings.
  const text::Tokenizer *tokenizer = nullptr;
};

/// Checks a request against the engine; throws std::invalid_argument with a
/// clear message (empty prompt, prompt plus max_tokens beyond the max sequence
/// length, out-of-vocabulary ids, invalid sampling parameters).
void validateRequest(const GenerationRequest &request, const Executor &executor);

/// Runs all requests to completion. Requests are admitted first come, first
/// served while the KV cache can hold their prompt plus max_tokens.
std::vector<GenerationResult> generate(Executor &executor, BlockManager &pages,
                                       const std::vector<GenerationRequest> &requests,
                                       const GeneratorOptions &options);

} // namespace llmc::runtime
