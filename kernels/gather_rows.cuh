// gather_rows: out[i, :] = x[rows[i], :] (e.g. the last token of each sequence
// before the LM head).
#pragma once

namespace llmc_kernels {

// One thread per 16-byte bf16/f16 vector (8 elements) of the row, in whole
// warps, between 1 and 32 warps; longer rows loop.
constexpr int gather_rows_block_threads(int hidden) {
  int t = ((hidden + 7) / 8 + 31) / 32 * 32;
  return t < 32 ? 32 : (t > 1024 ? 1024 : t);
}

template <int HIDDEN>
struct GatherRowsCfg {
  static constexpr int kBlock = gather_rows_block_threads(HIDDEN);
};

}  // namespace llmc_kernels

#ifdef __CUDACC__

namespace llmc_kernels {

// One block per output row.
template <int HIDDEN, typename T>
__global__ void __launch_bounds__(GatherRowsCfg<HIDDEN>::kBlock)
    gather_rows(const T* x, const int* rows, T* out, int num_rows) {
  begin_after_previous_kernels(NextKernel::kAtOnce);
  constexpr int BLOCK = GatherRowsCfg<HIDDEN>::kBlock;
  const int i = blockIdx.x;
  if (i >= num_rows) return;
  const long long r = rows[i];
  copy_row<HIDDEN, BLOCK>(x + r * HIDDEN, out + static_cast<long long>(i) * HIDDEN);
}

}  // namespace llmc_kernels

#endif  // __CUDACC__

// ---- launch geometry (host and device) ----
namespace llmc_kernels {

constexpr LaunchShape gather_rows_launch(int hidden) {
  LaunchShape s;
  s.grid_x = perSeq();  // one block per sequence (one gathered row each)
  s.block_threads = gather_rows_block_threads(hidden);
  return s;
}

}  // namespace llmc_kernels
