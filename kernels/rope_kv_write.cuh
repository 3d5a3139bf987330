// rope_kv_write: rotary embedding of q and k (Hugging Face rotate_half layout,
// not interleaved) and the write of this forward's k and v into the paged cache.
//
// Row t of qkv is [q heads | k heads | v heads], HEAD_DIM elements per head.
// For i < ROTARY_DIM/2 (half = ROTARY_DIM/2):
//   angle = float(positions[t]) * inv_freq[i]          (fp32, like HF's matmul)
//   c = T(cosf(angle)), s = T(sinf(angle))              (HF casts cos/sin to dtype)
//   y[i]        = T(T(x[i] * c)        - T(x[i + half] * s))
//   y[i + half] = T(T(x[i + half] * c) + T(x[i] * s))
// Each product is rounded to T before the sum because HF evaluates
// q * cos + rotate_half(q) * sin as separate ops in the model dtype (for
// T = float the roundings vanish). Dimensions >= ROTARY_DIM pass through.
// Outputs: q_out[t, NUM_HEADS * HEAD_DIM] = roped q; roped k and unmodified v
// go to KV position positions[t] of the token's sequence in k_cache / v_cache
// ([num_pages][PAGE_SIZE][NUM_KV_HEADS][HEAD_DIM]).
#pragma once

namespace llmc_kernels {

// One thread per rotation pair or pass-through dim of the q and k heads of a
// token, in whole warps, at most 512 (larger rows loop; the kernel moves
// several elements a thread where alignment allows, so fewer threads work).
constexpr int rope_kv_write_block_threads(int num_heads, int num_kv_heads, int head_dim,
                                          int rotary_dim) {
  int t = ((num_heads + num_kv_heads) * (head_dim - rotary_dim / 2) + 31) / 32 * 32;
  return t < 32 ? 32 : (t > 512 ? 512 : t);
}

template <int NUM_HEADS, int NUM_KV_HEADS, int HEAD_DIM, int ROTARY_DIM>
struct RopeKvWriteCfg {
  static constexpr int kBlock =
      rope_kv_write_block_threads(NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, ROTARY_DIM);
};

}  // namespace llmc_kernels

#ifdef __CUDACC__

namespace llmc_kernels {
namespace rope_kv_write_detail {

// One token's row, W elements an access: a work unit is W rotation pairs
// (dims i .. i + W - 1 and i + HALF ..), or W pass-through dims, of a q or k
// head, or W elements of the v heads; the units of the whole row are dealt
// round the block at once.
template <int W, int NUM_HEADS, int NUM_KV_HEADS, int HEAD_DIM, int ROTARY_DIM, int BLOCK,
          typename T>
__device__ __forceinline__ void rope_row(const T* row, T* q_row, T* k_slot, T* v_slot,
                                         const float* cos_s, const float* sin_s) {
  constexpr int HALF = ROTARY_DIM / 2;
  constexpr int PAIRS = HALF / W;                     // rotation units of a head
  constexpr int UNITS = PAIRS + (HEAD_DIM - ROTARY_DIM) / W;  // ... and pass-through units
  constexpr int QK_UNITS = (NUM_HEADS + NUM_KV_HEADS) * UNITS;
  constexpr int V_UNITS = NUM_KV_HEADS * HEAD_DIM / W;
  for (int u = threadIdx.x; u < QK_UNITS + V_UNITS; u += BLOCK) {
    if (u >= QK_UNITS) {
      // [kv head][dim] is contiguous in both the qkv row and one cache slot.
      const int c = u - QK_UNITS;
      store_vec<W>(v_slot, c, load_vec<W>(row + (NUM_HEADS + NUM_KV_HEADS) * HEAD_DIM, c));
      continue;
    }
    const int head = u / UNITS;  // < NUM_HEADS: a q head, else a k head
    const int r = u % UNITS;
    const T* x = row + head * HEAD_DIM;
    T* y = head < NUM_HEADS ? q_row + head * HEAD_DIM : k_slot + (head - NUM_HEADS) * HEAD_DIM;
    if (r < PAIRS) {
      const Vec<T, W> a = load_vec<W>(x, r), b = load_vec<W>(x + HALF, r);
      Vec<T, W> ya, yb;
#pragma unroll
      for (int j = 0; j < W; ++j) {
        const float x1 = to_float(a.v[j]);
        const float x2 = to_float(b.v[j]);
        const float c = cos_s[r * W + j];
        const float s = sin_s[r * W + j];
        // __fmul_rn: no FMA contraction, so each product is rounded on its
        // own as in HF even for T = float.
        ya.v[j] = from_float<T>(round_to<T>(__fmul_rn(x1, c)) - round_to<T>(__fmul_rn(x2, s)));
        yb.v[j] = from_float<T>(round_to<T>(__fmul_rn(x2, c)) + round_to<T>(__fmul_rn(x1, s)));
      }
      store_vec<W>(y, r, ya);
      store_vec<W>(y + HALF, r, yb);
    } else {
      store_vec<W>(y + ROTARY_DIM, r - PAIRS, load_vec<W>(x + ROTARY_DIM, r - PAIRS));
    }
  }
}

}  // namespace rope_kv_write_detail

// One block per token.
template <int NUM_HEADS, int NUM_KV_HEADS, int HEAD_DIM, int ROTARY_DIM, int PAGE_SIZE,
          typename T>
__global__ void __launch_bounds__(
    RopeKvWriteCfg<NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, ROTARY_DIM>::kBlock)
    rope_kv_write(const T* qkv, const int* positions, const int* qo_indptr, const int* kv_indptr,
                  const int* kv_page_indices, const float* inv_freq, T* q_out, T* k_cache,
                  T* v_cache, int num_tokens, int num_seqs) {
  begin_after_previous_kernels();
  static_assert(ROTARY_DIM > 0 && ROTARY_DIM % 2 == 0 && ROTARY_DIM <= HEAD_DIM,
                "ROTARY_DIM must be even and in (0, HEAD_DIM]");
  static_assert(NUM_HEADS % NUM_KV_HEADS == 0, "GQA needs NUM_HEADS % NUM_KV_HEADS == 0");
  constexpr int BLOCK = RopeKvWriteCfg<NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, ROTARY_DIM>::kBlock;
  constexpr int HALF = ROTARY_DIM / 2;
  constexpr int QKV_DIM = (NUM_HEADS + 2 * NUM_KV_HEADS) * HEAD_DIM;
  namespace rd = rope_kv_write_detail;

  const int t = blockIdx.x;
  if (t >= num_tokens) return;
  const int pos = positions[t];

  // cos/sin are shared by all heads of the token: compute each once.
  __shared__ __align__(16) float cos_s[HALF];
  __shared__ __align__(16) float sin_s[HALF];
  for (int i = threadIdx.x; i < HALF; i += BLOCK) {
    const float angle = static_cast<float>(pos) * inv_freq[i];
    cos_s[i] = round_to<T>(cosf(angle));
    sin_s[i] = round_to<T>(sinf(angle));
  }

  const int seq = find_seq(qo_indptr, num_seqs, t);
  // Element offset of (pos, kv head 0, dim 0) in the caches.
  const long long kv_base =
      kv_offset<PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM>(kv_indptr, kv_page_indices, seq, pos, 0);
  const T* row = qkv + static_cast<long long>(t) * QKV_DIM;
  T* q_row = q_out + static_cast<long long>(t) * (NUM_HEADS * HEAD_DIM);
  __syncthreads();

  // Elements a thread moves at once: a vector width that divides both HALF
  // (so the two halves of a rotation stay vector-aligned) and HEAD_DIM.
  constexpr int W = vec_width<T, HALF>() < vec_width<T, HEAD_DIM>() ? vec_width<T, HALF>()
                                                                     : vec_width<T, HEAD_DIM>();
  constexpr unsigned BYTES = W * sizeof(T);
  if (is_aligned(qkv, BYTES) && is_aligned(q_out, BYTES) && is_aligned(k_cache, BYTES) &&
      is_aligned(v_cache, BYTES)) {
    rd::rope_row<W, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, ROTARY_DIM, BLOCK>(
        row, q_row, k_cache + kv_base, v_cache + kv_base, cos_s, sin_s);
  } else {
    rd::rope_row<1, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, ROTARY_DIM, BLOCK>(
        row, q_row, k_cache + kv_base, v_cache + kv_base, cos_s, sin_s);
  }
}

}  // namespace llmc_kernels

#endif  // __CUDACC__

// ---- launch geometry (host and device) ----
namespace llmc_kernels {

constexpr LaunchShape rope_kv_write_launch(int num_heads, int num_kv_heads, int head_dim,
                                           int rotary_dim) {
  LaunchShape s;
  s.grid_x = perToken();  // one block per token
  s.block_threads = rope_kv_write_block_threads(num_heads, num_kv_heads, head_dim, rotary_dim);
  return s;
}

}  // namespace llmc_kernels
