// llmrun bench (see bench.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llmc {

struct BenchOptions {
  std::string engine;
  std::string weights;  // empty: random weights
  std::vector<int64_t> batches{1, 8, 32, 64, 128, 256};
  std::vector<int64_t> contexts{512, 4096};
  int repeats = 10;
  double memory_fraction = 0.9;  // of free GPU memory for weights, workspace and KV
  int64_t kv_cache_tokens = 0;   // > 0: the KV cache's size instead of what memory_fraction leaves
  bool dependent_launch = true;  // kernels start while the previous one finishes (sm_90)
  std::string gemm = "tuned";    // the GEMMs' kernel: tuned, gemv (where it takes them) or cublaslt
};

/// Prints the benchmark tables; throws on failure.
int runBench(const BenchOptions &options);

} // namespace llmc

#include "tools/llmrun/Engine.h"

namespace llmc {

struct BenchServeOptions {
  EngineOptions engine;
  int64_t num_requests = 256;
  int64_t input_len = 1000, output_len = 1000;
  int64_t shared_prefix_len = 0;   // tokens every prompt starts with (before its input_len own tokens)
  int64_t concurrency = 0;         // requests in flight at once; 0: all at once (or by --request-rate)
  double request_rate = 0;         // Poisson arrivals per second; 0: all at once
  bool prefix_caching = true;
  int64_t tokens_per_forward = 0, seqs_per_forward = 0;
  uint64_t seed = 0;
  float temperature = 0, top_p = 1;  // each request's sampling (seeded by its index)
  int top_k = 0;
};

/// Serves synthetic requests (random token prompts, ignore_eos; greedy unless
/// a temperature is given)
/// through the scheduler in this process and prints throughput, TTFT and
/// inter-token latency percentiles; runs on any backend.
int runBenchServe(const BenchServeOptions &options);

} // namespace llmc
