// The model's own generation settings: generation_config.json in the engine
// directory (copied there from the checkpoint by llmc compile) and the plan.
#pragma once

#include "runtime/plan/PlanFile.h"
#include "runtime/sample/Sampler.h"

#include <cstdint>
#include <string>
#include <vector>

namespace llmc::runtime {

struct GenerationConfig {
  /// Defaults for requests that do not say: temperature, top_p and top_k from
  /// the file when it sets do_sample, else greedy.
  sample::SamplingParams sampling;
  /// The plan's end-of-sequence tokens plus the file's (Llama 3 instruct
  /// models stop at <|eot_id|>, which only the latter names).
  std::vector<int32_t> eos_token_ids;

  /// A missing or malformed file gives greedy decoding and the plan's tokens.
  static GenerationConfig load(const std::string &engine_dir, const plan::Plan &plan);
};

} // namespace llmc::runtime
