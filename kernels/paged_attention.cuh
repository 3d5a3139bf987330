// paged_attention: causal (optionally sliding-window) attention of each query
// row over its sequence's paged KV cache, GQA-aware.
//
// For query row t (sequence s, from qo_indptr) and head h (kv head
// h / (NUM_HEADS / NUM_KV_HEADS)), with pos = positions[t]:
//   keys j in [lo, hi], lo = sliding_window > 0 ? max(0, pos - sliding_window + 1) : 0,
//                       hi = min(pos, kv_len(s) - 1)
//   logit_j = scale * dot(q, k_j)  (fp32), p = softmax(logits) (fp32),
//   out[t, h * HEAD_DIM ...] = T(sum_j p_j v_j)
// A row with no key (hi < lo; cannot happen for a well-formed batch) gets zeros.
//
// One block per (token, kv head): the block serves the GROUP query heads of
// the kv head, so each K/V element is read once for all of them. Keys are
// processed in tiles of kPagedAttentionTile with an online softmax:
//   1. logits: one warp per key, lanes split HEAD_DIM, GROUP dot products;
//   2. per head (one warp each): running max m, rescale alpha, running sum l;
//   3. P.V: thread (part, d) accumulates dim d over keys part, part + NPARTS, ...
// and the NPARTS partial accumulators are summed at the end.
#pragma once

namespace llmc_kernels {

constexpr int kPagedAttentionTile = 64;  // keys per online-softmax step

// At least 4 warps (so decode rows still get some parallelism) and at least one
// thread per head dim for the P.V step, in whole warps.
constexpr int paged_attention_block_threads(int head_dim) {
  int t = (head_dim + 31) / 32 * 32;
  return t < 128 ? 128 : t;
}

template <int HEAD_DIM>
struct PagedAttentionCfg {
  static constexpr int kBlock = paged_attention_block_threads(HEAD_DIM);
};

}  // namespace llmc_kernels

#ifdef __CUDACC__

namespace llmc_kernels {

// grid = (tokens, NUM_KV_HEADS).
template <int NUM_HEADS, int NUM_KV_HEADS, int HEAD_DIM, int PAGE_SIZE, typename T>
__global__ void __launch_bounds__(PagedAttentionCfg<HEAD_DIM>::kBlock)
    paged_attention(const T* q, const T* k_cache, const T* v_cache, const int* positions,
                    const int* qo_indptr, const int* kv_indptr, const int* kv_page_indices,
                    const int* kv_last_page_len, T* out, float scale, int sliding_window,
                    int num_tokens, int num_seqs) {
  static_assert(NUM_HEADS % NUM_KV_HEADS == 0, "GQA needs NUM_HEADS % NUM_KV_HEADS == 0");
  constexpr int GROUP = NUM_HEADS / NUM_KV_HEADS;
  constexpr int BLOCK = PagedAttentionCfg<HEAD_DIM>::kBlock;
  constexpr int WARPS = BLOCK / 32;
  constexpr int TILE = kPagedAttentionTile;
  constexpr int NPARTS = BLOCK / HEAD_DIM;             // key-parallel slices in P.V (>= 1)
  constexpr int DIMS_PER_LANE = (HEAD_DIM + 31) / 32;  // for the q.k dot products
  static_assert(BLOCK % 32 == 0 && NPARTS >= 1, "block must be whole warps and >= HEAD_DIM");
  static_assert(sizeof(float) * (GROUP * HEAD_DIM * (1 + NPARTS) + GROUP * (TILE + 3)) <= 48 * 1024,
                "static shared memory over 48 KiB: GROUP or HEAD_DIM too large for this kernel");

  const int t = blockIdx.x;
  const int kvh = blockIdx.y;
  if (t >= num_tokens) return;

  const int seq = find_seq(qo_indptr, num_seqs, t);
  const int pos = positions[t];
  const int kv_len = seq_kv_len(kv_indptr, kv_last_page_len, seq, PAGE_SIZE);
  const int hi = min(pos, kv_len - 1);
  const int lo = sliding_window > 0 ? max(0, pos - sliding_window + 1) : 0;
  const int* pages = kv_page_indices + kv_indptr[seq];
  // Element offset of (key j, this kv head, dim 0) in k_cache / v_cache.
  auto kv_off = [&](int j) -> long long {
    const long long page = pages[j / PAGE_SIZE];
    return ((page * PAGE_SIZE + j % PAGE_SIZE) * NUM_KV_HEADS + kvh) * HEAD_DIM;
  };

  __shared__ float q_s[GROUP][HEAD_DIM];
  __shared__ float p_s[GROUP][TILE];  // logits of the tile, then exp(logit - m)
  __shared__ float m_s[GROUP];        // running max of the logits
  __shared__ float l_s[GROUP];        // running sum of exp(logit - m)
  __shared__ float alpha_s[GROUP];    // exp(m_old - m_new) of the current tile
  __shared__ float acc_s[NPARTS][GROUP][HEAD_DIM];

  // The GROUP query heads of kv head kvh are contiguous in the q row.
  const T* q_row = q + static_cast<long long>(t) * (NUM_HEADS * HEAD_DIM) +
                   static_cast<long long>(kvh) * (GROUP * HEAD_DIM);
  for (int i = threadIdx.x; i < GROUP * HEAD_DIM; i += BLOCK) {
    q_s[i / HEAD_DIM][i % HEAD_DIM] = to_float(q_row[i]);
  }
  for (int g = threadIdx.x; g < GROUP; g += BLOCK) {
    m_s[g] = neg_inf();
    l_s[g] = 0.f;
  }
  __syncthreads();

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int d_pv = threadIdx.x % HEAD_DIM;  // P.V: this thread's output dim
  const int part = threadIdx.x / HEAD_DIM;  // P.V: this thread's key slice
  float acc[GROUP];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) acc[g] = 0.f;

  for (int j0 = lo; j0 <= hi; j0 += TILE) {
    const int n = min(TILE, hi - j0 + 1);  // keys in this tile, >= 1

    // 1. logits. Lanes take dims lane, lane + 32, ...: coalesced K reads and
    //    conflict-free q_s reads.
    for (int jj = warp; jj < n; jj += WARPS) {
      const T* k = k_cache + kv_off(j0 + jj);
      float dot[GROUP];
#pragma unroll
      for (int g = 0; g < GROUP; ++g) dot[g] = 0.f;
#pragma unroll
      for (int i = 0; i < DIMS_PER_LANE; ++i) {
        const int d = i * 32 + lane;
        if (d < HEAD_DIM) {
          const float kf = to_float(k[d]);
#pragma unroll
          for (int g = 0; g < GROUP; ++g) dot[g] += q_s[g][d] * kf;
        }
      }
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        const float v = warp_reduce_sum(dot[g]);
        if (lane == 0) p_s[g][jj] = scale * v;
      }
    }
    __syncthreads();

    // 2. online-softmax statistics, one warp per head.
    for (int g = warp; g < GROUP; g += WARPS) {
      const float m_old = m_s[g];  // read by all lanes before lane 0 updates it below
      float mx = neg_inf();
      for (int jj = lane; jj < n; jj += 32) mx = fmaxf(mx, p_s[g][jj]);
      const float m_new = fmaxf(m_old, warp_reduce_max(mx));
      float sum = 0.f;
      for (int jj = lane; jj < n; jj += 32) {
        const float p = expf(p_s[g][jj] - m_new);
        p_s[g][jj] = p;
        sum += p;
      }
      sum = warp_reduce_sum(sum);
      if (lane == 0) {
        // m_old == neg_inf() only before the first tile (nothing to rescale yet).
        const float alpha = m_old == neg_inf() ? 0.f : expf(m_old - m_new);
        alpha_s[g] = alpha;
        l_s[g] = l_s[g] * alpha + sum;
        m_s[g] = m_new;
      }
    }
    __syncthreads();

    // 3. P.V into the per-thread accumulators.
    if (part < NPARTS) {
#pragma unroll
      for (int g = 0; g < GROUP; ++g) acc[g] *= alpha_s[g];
      for (int jj = part; jj < n; jj += NPARTS) {
        const float vf = to_float(v_cache[kv_off(j0 + jj) + d_pv]);
#pragma unroll
        for (int g = 0; g < GROUP; ++g) acc[g] += p_s[g][jj] * vf;
      }
    }
    __syncthreads();  // p_s and alpha_s are rewritten by the next tile
  }

  // Combine the key slices and normalise.
  if (part < NPARTS) {
#pragma unroll
    for (int g = 0; g < GROUP; ++g) acc_s[part][g][d_pv] = acc[g];
  }
  __syncthreads();
  T* out_row = out + static_cast<long long>(t) * (NUM_HEADS * HEAD_DIM) +
               static_cast<long long>(kvh) * (GROUP * HEAD_DIM);
  for (int i = threadIdx.x; i < GROUP * HEAD_DIM; i += BLOCK) {
    const int g = i / HEAD_DIM;
    const int d = i % HEAD_DIM;
    float o = 0.f;
#pragma unroll
    for (int p = 0; p < NPARTS; ++p) o += acc_s[p][g][d];
    const float l = l_s[g];
    out_row[i] = from_float<T>(l > 0.f ? o / l : 0.f);
  }
}

}  // namespace llmc_kernels

#endif  // __CUDACC__

// ---- launch geometry (host and device) ----
namespace llmc_kernels {

constexpr LaunchShape paged_attention_launch(int num_kv_heads, int head_dim) {
  LaunchShape s;
  s.grid_x = perToken();                      // one query row per block
  s.grid_y = SymExpr{0, 0, num_kv_heads, 1};  // one GQA group (kv head) per block
  s.block_threads = paged_attention_block_threads(head_dim);
  return s;
}

}  // namespace llmc_kernels
