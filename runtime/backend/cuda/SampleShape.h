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

} // namespace llmc::sample_rows
