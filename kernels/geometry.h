// Launch geometry shared by the compiler (host C++) and the kernels (NVRTC).
// A grid dimension is a function of the forward's symbolic sizes:
//   value = ceil((tokens * T + seqs * S + constant) / divisor)
// where T = num_tokens and S = num_seqs of the batch being run.
#pragma once

namespace llmc_kernels {

struct SymExpr {
  long long tokens = 0;
  long long seqs = 0;
  long long constant = 1;
  long long divisor = 1;

  constexpr long long eval(long long num_tokens, long long num_seqs) const {
    long long numerator = tokens * num_tokens + seqs * num_seqs + constant;
    return (numerator + divisor - 1) / divisor;
  }
};

constexpr SymExpr kOne{0, 0, 1, 1};
constexpr SymExpr perToken(long long divisor = 1) { return SymExpr{1, 0, 0, divisor}; }
constexpr SymExpr perSeq(long long divisor = 1) { return SymExpr{0, 1, 0, divisor}; }

struct LaunchShape {
  SymExpr grid_x = kOne;
  SymExpr grid_y = kOne;
  SymExpr grid_z = kOne;
  int block_threads = 1;
  int shared_bytes = 0;
  // > 1: the kernel reads its cluster size at run time and accepts clusters
  // of up to this many blocks along x; the runtime picks the size
  // (cluster_blocks) and multiplies grid x by it.
  int max_cluster = 1;
};

// Blocks per cluster for a kernel whose grid has `items` blocks without
// clusters: each item is split over more blocks (a power of two up to
// max_cluster) only while the whole grid stays within about two blocks per
// multiprocessor. A small batch's few long rows are spread over the GPU; a
// large batch already fills it, and a split would only add merge work.
// Beyond the portable 8 (16 needs the runtime's opt-in and a GPC with 16
// free multiprocessors' worth of room) only while the grid stays within one
// block a multiprocessor.
constexpr int kPortableClusterBlocks = 8;
constexpr int cluster_blocks(long long items, int max_cluster, int multiprocessors) {
  int c = 1;
  while (c * 2 <= max_cluster && c * 2 <= kPortableClusterBlocks && items * c * 2 <= 2LL * multiprocessors)
    c *= 2;
  while (c >= kPortableClusterBlocks && c * 2 <= max_cluster && items * c * 2 <= multiprocessors) c *= 2;
  return c;
}

}  // namespace llmc_kernels
