// silu_mul: SwiGLU activation of a fused gate/up projection, with Hugging
// Face's roundings (act_fn(gate) is materialised in the model dtype, then
// multiplied by up in that dtype):
//   out[t, i] = T(float(T(silu(float(gate[t, i])))) * float(up[t, i]))
// where row t of gate_up is [gate (INTERMEDIATE) | up (INTERMEDIATE)].
#pragma once

namespace llmc_kernels {

// 256 threads x 8 elements (one 16-byte bf16/f16 vector) = 2048 columns per
// block: big enough to amortise the block, small enough to fill the GPU at
// batch 1 (e.g. 7 blocks per token for INTERMEDIATE = 14336).
constexpr int kSiluMulBlockThreads = 256;
constexpr int kSiluMulColsPerBlock = kSiluMulBlockThreads * 8;

constexpr int silu_mul_col_blocks(int intermediate) {
  return (intermediate + kSiluMulColsPerBlock - 1) / kSiluMulColsPerBlock;
}

}  // namespace llmc_kernels

#ifdef __CUDACC__

namespace llmc_kernels {

template <int INTERMEDIATE, int W, typename T>
__device__ __forceinline__ void silu_mul_cols(const T* gate, const T* up, T* out, int col0) {
  // Chunks of W columns in [col0, col0 + kSiluMulColsPerBlock) clipped to INTERMEDIATE;
  // INTERMEDIATE % W == 0 and col0 % W == 0, so chunks never straddle the end.
  const int c_begin = col0 / W;
  int c_end = (col0 + kSiluMulColsPerBlock) / W;
  if (c_end > INTERMEDIATE / W) c_end = INTERMEDIATE / W;
  for (int c = c_begin + threadIdx.x; c < c_end; c += kSiluMulBlockThreads) {
    const Vec<T, W> gv = load_vec<W>(gate, c);
    const Vec<T, W> uv = load_vec<W>(up, c);
    Vec<T, W> o;
#pragma unroll
    for (int j = 0; j < W; ++j) {
      const float g = to_float(gv.v[j]);
      const float act = round_to<T>(g / (1.0f + expf(-g)));
      o.v[j] = from_float<T>(act * to_float(uv.v[j]));
    }
    store_vec<W>(out, c, o);
  }
}

// Block (x, y) handles token x, columns [y * 2048, (y + 1) * 2048).
template <int INTERMEDIATE, typename T>
__global__ void __launch_bounds__(kSiluMulBlockThreads)
    silu_mul(const T* gate_up, T* out, int num_tokens) {
  begin_after_previous_kernels(NextKernel::kAtOnce);
  constexpr int W = vec_width<T, INTERMEDIATE>();
  const int t = blockIdx.x;
  if (t >= num_tokens) return;
  const T* gate = gate_up + static_cast<long long>(t) * (2 * INTERMEDIATE);
  const T* up = gate + INTERMEDIATE;
  T* o = out + static_cast<long long>(t) * INTERMEDIATE;
  const int col0 = blockIdx.y * kSiluMulColsPerBlock;
  // INTERMEDIATE % W == 0, so aligned bases keep every row (and the up half)
  // aligned; the test is uniform across the block.
  constexpr unsigned kBytes = W * sizeof(T);
  if (is_aligned(gate_up, kBytes) && is_aligned(out, kBytes)) {
    silu_mul_cols<INTERMEDIATE, W>(gate, up, o, col0);
  } else {
    silu_mul_cols<INTERMEDIATE, 1>(gate, up, o, col0);
  }
}

}  // namespace llmc_kernels

#endif  // __CUDACC__

// ---- launch geometry (host and device) ----
namespace llmc_kernels {

constexpr LaunchShape silu_mul_launch(int intermediate) {
  LaunchShape s;
  s.grid_x = perToken();  // one block row per token
  s.grid_y = SymExpr{0, 0, silu_mul_col_blocks(intermediate), 1};  // 2048 columns per block
  s.block_threads = kSiluMulBlockThreads;
  return s;
}

}  // namespace llmc_kernels
