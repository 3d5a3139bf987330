// rms_norm: Hugging Face LlamaRMSNorm / Qwen2RMSNorm with its roundings:
//   h = float(x); n = h * rsqrt(mean(h^2) + eps); out = T(float(weight) * float(T(n)))
// (HF casts the normalised value to the input dtype, then multiplies by the
// weight in that dtype).
#pragma once

namespace llmc_kernels {

// One thread per 16-byte bf16/f16 vector (8 elements) of the row, in whole
// warps (the block reduction needs them), between 1 and 32 warps.
constexpr int rms_norm_block_threads(int hidden) {
  int t = ((hidden + 7) / 8 + 31) / 32 * 32;
  return t < 32 ? 32 : (t > 1024 ? 1024 : t);
}

template <int HIDDEN>
struct RmsNormCfg {
  static constexpr int kBlock = rms_norm_block_threads(HIDDEN);
};

}  // namespace llmc_kernels

#ifdef __CUDACC__

namespace llmc_kernels {

// One row with chunks of W elements; the row stays in registers between the
// sum-of-squares pass and the output pass.
template <int HIDDEN, int BLOCK, int W, typename T>
__device__ __forceinline__ void rms_norm_row(const T* x, const T* weight, T* out, float eps) {
  constexpr int CHUNKS = HIDDEN / W;
  constexpr int ITEMS = (CHUNKS + BLOCK - 1) / BLOCK;
  Vec<T, W> xv[ITEMS];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int c = threadIdx.x + i * BLOCK;
    if (c < CHUNKS) {
      xv[i] = load_vec<W>(x, c);
#pragma unroll
      for (int j = 0; j < W; ++j) {
        const float h = to_float(xv[i].v[j]);
        ss += h * h;
      }
    }
  }
  ss = block_reduce_sum<BLOCK>(ss);
  const float inv_rms = rsqrtf(ss / static_cast<float>(HIDDEN) + eps);
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int c = threadIdx.x + i * BLOCK;
    if (c < CHUNKS) {
      const Vec<T, W> wv = load_vec<W>(weight, c);
      Vec<T, W> o;
#pragma unroll
      for (int j = 0; j < W; ++j) {
        const float n = round_to<T>(to_float(xv[i].v[j]) * inv_rms);
        o.v[j] = from_float<T>(to_float(wv.v[j]) * n);
      }
      store_vec<W>(out, c, o);
    }
  }
}

// One block per row. x and out may be the same buffer.
template <int HIDDEN, typename T>
__global__ void __launch_bounds__(RmsNormCfg<HIDDEN>::kBlock)
    rms_norm(const T* x, const T* weight, T* out, float eps, int num_rows) {
  begin_after_previous_kernels(NextKernel::kAtOnce);
  constexpr int BLOCK = RmsNormCfg<HIDDEN>::kBlock;
  constexpr int W = vec_width<T, HIDDEN>();
  const int row = blockIdx.x;
  if (row >= num_rows) return;
  const long long off = static_cast<long long>(row) * HIDDEN;
  // HIDDEN % W == 0, so aligned bases keep every row aligned; the test is
  // uniform across the block.
  constexpr unsigned kBytes = W * sizeof(T);
  if (is_aligned(x, kBytes) && is_aligned(weight, kBytes) && is_aligned(out, kBytes)) {
    rms_norm_row<HIDDEN, BLOCK, W>(x + off, weight, out + off, eps);
  } else {
    rms_norm_row<HIDDEN, BLOCK, 1>(x + off, weight, out + off, eps);
  }
}

}  // namespace llmc_kernels

#endif  // __CUDACC__

// ---- launch geometry (host and device) ----
namespace llmc_kernels {

constexpr LaunchShape rms_norm_launch(int hidden) {
  LaunchShape s;
  s.grid_x = perToken();  // one block per row (rows = tokens)
  s.block_threads = rms_norm_block_threads(hidden);
  return s;
}

}  // namespace llmc_kernels
