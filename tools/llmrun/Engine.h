// The engine every llmrun command loads: plan, weights (a checkpoint or
// random), backend, executor and KV pages.
#pragma once

#include "runtime/backend/Backend.h"
#include "runtime/engine/Executor.h"
#include "runtime/kv/BlockManager.h"
#include "runtime/plan/PlanFile.h"
#include "runtime/weights/safetensors.h"

#include <memory>
#include <optional>
#include <string>

namespace llmc {

struct EngineOptions {
  std::string engine;
  std::string weights;  // empty: deterministic random weights (benchmarks)
  std::string backend = "auto";
  int64_t kv_cache_tokens = 0;
  double gpu_memory_fraction = 0.9;
};

struct Engine {
  plan::PlanFile plan;
  std::optional<weights::Checkpoint> checkpoint;
  std::unique_ptr<runtime::Backend> backend;
  std::unique_ptr<runtime::Executor> executor;
  std::unique_ptr<runtime::BlockManager> pages;

  /// KV pages: kv_cache_tokens, else gpu_memory_fraction of the free device
  /// memory (after weights and workspace), else (CPU) enough for four
  /// sequences of the max length, at most 65536 tokens.
  explicit Engine(const EngineOptions &options);
};

} // namespace llmc
