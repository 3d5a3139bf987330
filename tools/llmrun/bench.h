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
};

/// Prints the benchmark tables; throws on failure.
int runBench(const BenchOptions &options);

} // namespace llmc
