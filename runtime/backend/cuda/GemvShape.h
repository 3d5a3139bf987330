// The decode GEMV's shape (runtime/backend/cuda/gemv.cu), shared by the CUDA
// backend and the kernel: NVRTC sees this file's text before the kernel's.
#pragma once

namespace llmc::gemv {

constexpr int kWarps = 16;          // per block; they split k
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerBlock = 16;   // weight rows (output columns) per block: the mma's M
constexpr int kMaxInputRows = 8;    // input rows: the mma's N
constexpr int kUnroll = 4;          // 32-k blocks a warp loads together

// Bits of the kernel's `flags` argument.
constexpr int kHalfInputs = 1;   // f16 inputs, weights and bias (else bf16)
constexpr int kFloatOutput = 2;  // fp32 output (else the input type)

// Registers are capped so that two blocks fit on a multiprocessor (64 a
// thread), but the grid takes one per multiprocessor: the other place is left
// to the next GEMV, whose blocks start during this one's tail and stream their
// first weights while it finishes (common.cuh's NextKernel::kAtOnce).
constexpr int kBlocksPerMultiprocessor = 2;
constexpr int kGridBlocksPerMultiprocessor = 1;

// One block per tile of 16 weight rows, at most one per multiprocessor.
constexpr long long gridBlocks(long long n, int multiprocessors) {
  const long long tiles = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  const long long resident = (long long)kGridBlocksPerMultiprocessor * multiprocessors;
  return tiles < resident ? tiles : resident;
}

// Whether the kernel computes a rows x n x k GEMM whose input and weight
// start at 16-byte aligned addresses: up to 8 rows, k a whole number of
// 16-byte vectors, every vector offset into the weight within int.
constexpr bool takes(long long rows, long long n, long long k, bool aligned) {
  return aligned && rows >= 1 && rows <= kMaxInputRows && n >= 1 && k >= 8 && k % 8 == 0 &&
         (n + kRowsPerBlock) * (k / 8) <= 0x7fffffffLL;
}

} // namespace llmc::gemv
