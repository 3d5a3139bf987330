// The device sampler's launch shape (runtime/backend/cuda/sample_rows.cu),
// shared by the CUDA backend and the kernel: NVRTC sees this file's text
// before the kernel's.
#pragma once

namespace llmc::sample_rows {

constexpr int kThreads = 1024;               // a block
constexpr int kFirstLevelBuckets = 1 << 12;  // the radix descent's first level: 12 bits of rank

// An fp64 histogram of the first level. A block's dynamic shared memory is
// one (its own) when it serves a row alone, two (its own and the row's, the
// sum over the row's blocks) in a cluster.
constexpr int kHistogramBytes = kFirstLevelBuckets * 8;
constexpr int sharedBytes(int row_blocks) { return (row_blocks > 1 ? 2 : 1) * kHistogramBytes; }

// Blocks a row, for `rows` rows: a power of two up to max_blocks (the
// largest cluster the GPU places) while the grid keeps one block a
// multiprocessor. A row alone on one multiprocessor is latency-bound; a
// full batch already fills the GPU.
constexpr int rowBlocks(long long rows, int max_blocks, int multiprocessors) {
  int blocks = 1;
  while (blocks * 2 <= max_blocks && rows * blocks * 2 <= multiprocessors) blocks *= 2;
  return blocks;
}

// Tokens of each block's slice when `blocks` blocks split a row of `cols`:
// a multiple of 4 (the last slices may be shorter, or empty).
constexpr int sliceTokens(int cols, int blocks) { return ((cols + blocks - 1) / blocks + 3) & ~3; }

} // namespace llmc::sample_rows
