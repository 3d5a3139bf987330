// add_rms_norm: residual add fused with RMSNorm, with Hugging Face's roundings:
//   s = T(float(a) + float(b))            (HF adds residuals in the model dtype)
//   sum_out = s
//   norm_out = T(float(weight) * float(T(float(s) * rsqrt(mean(float(s)^2) + eps))))
// sum_out may alias a or b (in-place residual): each element is read and then
// written by the same thread.
#pragma once

namespace llmc_kernels {

// One thread per 16-byte bf16/f16 vector (8 elements) of the row, in whole
// warps (the block reduction needs them), between 1 and 32 warps.
constexpr int add_rms_norm_block_threads(int hidden) {
  int t = ((hidden + 7) / 8 + 31) / 32 * 32;
  return t < 32 ? 32 : (t > 1024 ? 1024 : t);
}

template <int HIDDEN>
struct AddRmsNormCfg {
  static constexpr int kBlock = add_rms_norm_block_threads(HIDDEN);
};

}  // namespace llmc_kernels

#ifdef __CUDACC__

namespace llmc_kernels {

// One row with chunks of W elements; the rounded sum stays in registers
// between the sum-of-squares pass and the output pass.
template <int HIDDEN, int BLOCK, int W, typename T>
__device__ __forceinline__ void add_rms_norm_row(const T* a, const T* b, const T* weight,
                                                 T* sum_out, T* norm_out, float eps) {
  constexpr int CHUNKS = HIDDEN / W;
  constexpr int ITEMS = (CHUNKS + BLOCK - 1) / BLOCK;
  Vec<T, W> sv[ITEMS];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int c = threadIdx.x + i * BLOCK;
    if (c < CHUNKS) {
      const Vec<T, W> av = load_vec<W>(a, c);
      const Vec<T, W> bv = load_vec<W>(b, c);
#pragma unroll
      for (int j = 0; j < W; ++j) {
        sv[i].v[j] = from_float<T>(to_float(av.v[j]) + to_float(bv.v[j]));
        const float h = to_float(sv[i].v[j]);  // statistics of the rounded sum
        ss += h * h;
      }
      store_vec<W>(sum_out, c, sv[i]);  // after this thread's reads of a[c], b[c]
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
        const float n = round_to<T>(to_float(sv[i].v[j]) * inv_rms);
        o.v[j] = from_float<T>(to_float(wv.v[j]) * n);
      }
      store_vec<W>(norm_out, c, o);
    }
  }
}

// One block per row.
template <int HIDDEN, typename T>
__global__ void __launch_bounds__(AddRmsNormCfg<HIDDEN>::kBlock)
    add_rms_norm(const T* a, const T* b, const T* weight, T* sum_out, T* norm_out, float eps,
                 int num_rows) {
  begin_after_previous_kernels(NextKernel::kAtOnce);
  constexpr int BLOCK = AddRmsNormCfg<HIDDEN>::kBlock;
  constexpr int W = vec_width<T, HIDDEN>();
  const int row = blockIdx.x;
  if (row >= num_rows) return;
  const long long off = static_cast<long long>(row) * HIDDEN;
  // HIDDEN % W == 0, so aligned bases keep every row aligned; the test is
  // uniform across the block.
  constexpr unsigned kBytes = W * sizeof(T);
  if (is_aligned(a, kBytes) && is_aligned(b, kBytes) && is_aligned(weight, kBytes) &&
      is_aligned(sum_out, kBytes) && is_aligned(norm_out, kBytes)) {
    add_rms_norm_row<HIDDEN, BLOCK, W>(a + off, b + off, weight, sum_out + off, norm_out + off,
                                       eps);
  } else {
    add_rms_norm_row<HIDDEN, BLOCK, 1>(a + off, b + off, weight, sum_out + off, norm_out + off,
                                       eps);
  }
}

}  // namespace llmc_kernels

#endif  // __CUDACC__

// ---- launch geometry (host and device) ----
namespace llmc_kernels {

constexpr LaunchShape add_rms_norm_launch(int hidden) {
  LaunchShape s;
  s.grid_x = perToken();  // one block per row (rows = tokens)
  s.block_threads = add_rms_norm_block_threads(hidden);
  return s;
}

}  // namespace llmc_kernels
