// The decode GEMV's shape (runtime/backend/cuda/gemv.cu), shared by the CUDA
// backend and the kernel: NVRTC sees this file's text before the kernel's.
#pragma once

namespace llmc::gemv {

constexpr int kWarps = 8;                  // warps that multiply; they split each chunk's k
constexpr int kThreads = (kWarps + 1) * 32;  // and one warp that issues the weight copies
constexpr int kRowsPerBlock = 16;          // weight rows (output columns) per tile: the mma's M
constexpr int kMaxInputRows = 8;           // input rows: the mma's N
constexpr int kUnroll = 4;                 // 32-k blocks of a chunk each warp multiplies

// A tile's weights arrive in chunks: kChunkBytes of each of its 16 rows (the
// last chunk of a row may be shorter), one bulk copy a row, into a ring of
// kStages chunks in shared memory. Each row is padded by 64 bytes so that
// rows g and g + 1, which one quarter of a warp reads together, fall on
// different banks. Four chunks of 2 KB (132 KB, so one block a
// multiprocessor) streamed faster than three (two blocks a multiprocessor)
// and as fast as six, or three of 4 KB (docs/PERF.md).
constexpr int kChunkBytes = kWarps * kUnroll * 64;  // a 32-k block of a row is 64 bytes
constexpr int kRowStrideBytes = kChunkBytes + 64;
constexpr int kStageBytes = kRowsPerBlock * kRowStrideBytes;
constexpr int kStages = 4;
constexpr int kSharedBytes = kStages * kStageBytes;  // dynamic shared memory a block

// Bits of the kernel's `flags` argument.
constexpr int kHalfInputs = 1;   // f16 inputs, weights and bias (else bf16)
constexpr int kFloatOutput = 2;  // fp32 output (else the input type)

// The kernel's static shared memory besides the ring, rounded up: the
// partial sums of a tile (4 KB) and the ring's barriers.
constexpr int kStaticSharedBytes = 5 * 1024;

// One block a multiprocessor, each with its ring; the system reserves 1 KB
// a block on top.
constexpr int kBlocksPerMultiprocessor = 1;
static_assert(kBlocksPerMultiprocessor * (kSharedBytes + kStaticSharedBytes + 1024) <= 228 * 1024,
              "a GEMV block fits in an sm_90 multiprocessor's shared memory");

// Tiles of 16 weight rows in an n-row weight, and the chunks of a row of k
// 16-bit elements (the copy warp and the multiplying warps walk the same ones).
constexpr long long tilesOf(long long n) { return (n + kRowsPerBlock - 1) / kRowsPerBlock; }
constexpr long long chunksOf(long long k) { return (2 * k + kChunkBytes - 1) / kChunkBytes; }

// One block per tile, at most one per multiprocessor.
constexpr long long gridBlocks(long long n, int multiprocessors) {
  const long long tiles = tilesOf(n);
  const long long resident = (long long)kBlocksPerMultiprocessor * multiprocessors;
  return tiles < resident ? tiles : resident;
}

// Whether the kernel computes a rows x n x k GEMM whose input and weight
// start at 16-byte aligned addresses: up to 8 rows, k a whole number of
// 16-byte vectors (so every row, and every chunk of it, starts 16-byte
// aligned, as bulk copies need), every vector offset into the weight within int.
constexpr bool takes(long long rows, long long n, long long k, bool aligned) {
  return aligned && rows >= 1 && rows <= kMaxInputRows && n >= 1 && k >= 8 && k % 8 == 0 &&
         (n + kRowsPerBlock) * (k / 8) <= 0x7fffffffLL;
}

} // namespace llmc::gemv
