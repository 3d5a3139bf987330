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
// Split-KV in one launch, without workspace: a thread-block cluster of
// kPagedAttentionCluster blocks serves each (token, kv head), and the
// GROUP query heads of the kv head together, so each K/V element is read once
// for all of them. The keys [lo, hi] are dealt round-robin to "slots": a slot
// is a group of LPK lanes of one warp (LPK = lanes that cover HEAD_DIM in
// 16-byte vectors, 16 for bf16/f16 x 128), so each warp runs 32 / LPK slots
// and the cluster kPagedAttentionCluster * warps * 32 / LPK of them.
//   1. each slot keeps its own online softmax (running max m, sum l and an fp32
//      accumulator for its lanes' dims, for all GROUP heads) over its keys,
//      kPagedAttentionUnroll keys a step with all their K and V loads issued
//      together; logits are reduced across the slot's lanes with shuffles;
//   2. the slots of a warp are merged with shuffles, the warps of a block in
//      shared memory;
//   3. after a cluster barrier, block r combines the block partials of all
//      ranks (read through distributed shared memory) for its 1/cluster share
//      of the GROUP * HEAD_DIM outputs, normalises and writes them once.
// A decode step of batch B thus runs B * NUM_KV_HEADS * cluster blocks however
// long the context is. Without clusters (compiled for < sm_90) block 0 of
// each cluster-sized group does all the work and the others exit.
#pragma once

namespace llmc_kernels {

// Chosen by measurement on an H200, Llama-3.1-8B shape (bf16, 32/8 heads, 128
// dims): against 8 or 16 warps and unroll 2 or 8, 4 warps x unroll 4 is the
// fastest at decode batch 8 and 64 and for prefill; 8 (16) warps are 1.5x
// (1.8x) faster at batch 1 with 4096 keys but up to 2x slower at batch 64.
constexpr int kPagedAttentionCluster = 8;  // blocks per (token, kv head); portable cluster max
constexpr int kPagedAttentionWarps = 4;    // warps per block
constexpr int kPagedAttentionUnroll = 4;   // keys per slot per step (K/V loads in flight)

// Whole warps; the kernel loops over HEAD_DIM, so any head_dim works.
constexpr int paged_attention_block_threads(int head_dim) {
  (void)head_dim;
  return kPagedAttentionWarps * 32;
}

template <int HEAD_DIM>
struct PagedAttentionCfg {
  static constexpr int kBlock = paged_attention_block_threads(HEAD_DIM);
  static constexpr int kCluster = kPagedAttentionCluster;
};

}  // namespace llmc_kernels

#ifdef __CUDACC__

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define LLMC_PAGED_ATTENTION_CLUSTERS 1
#define LLMC_PAGED_ATTENTION_CLUSTER_DIMS __cluster_dims__(kPagedAttentionCluster, 1, 1)
#else
#define LLMC_PAGED_ATTENTION_CLUSTERS 0
#define LLMC_PAGED_ATTENTION_CLUSTER_DIMS
#endif

namespace llmc_kernels {
namespace paged_attention_detail {

// Largest power of two <= 32 that divides `chunks` (lanes sharing one key).
__host__ __device__ constexpr int lanes_per_key(int chunks) {
  int l = 32;
  while (l > 1 && chunks % l != 0) l /= 2;
  return l;
}

// Elements per vector access: the widest power of two of at most 16 bytes that
// divides HEAD_DIM and leaves each lane at most 2 vectors of a row (so that
// enough lanes share a key; 1, i.e. scalar, for dims like 80 or 96).
template <typename T, int HEAD_DIM>
__host__ __device__ constexpr int vector_width() {
  for (int w = 16 / static_cast<int>(sizeof(T)); w > 1; w /= 2) {
    if (HEAD_DIM % w == 0 && HEAD_DIM / (w * lanes_per_key(HEAD_DIM / w)) <= 2) return w;
  }
  return 1;
}

__device__ __forceinline__ unsigned cluster_rank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

// All threads of all blocks of the cluster; release/acquire orders shared
// memory (local and distributed) around it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n\t"
      "barrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// Generic address of the variable at p (in this block's shared memory) in the
// shared memory of block `rank` of the cluster.
template <typename P>
__device__ __forceinline__ const P* map_rank(const P* p, unsigned rank) {
  unsigned long long r;
  asm volatile("mapa.u64 %0, %1, %2;" : "=l"(r) : "l"(p), "r"(rank));
  return reinterpret_cast<const P*>(r);
}

// Steps 1 and 2a for one warp: its slots walk their keys, then merge with
// shuffles, after which every lane holds the warp's (m, l) and lanes
// 0..LPK-1 the warp's accumulators. VW = elements per vector access (1 when
// the pointers are not vector-aligned).
template <int GROUP, int NUM_KV_HEADS, int HEAD_DIM, int PAGE_SIZE, int VW, typename T>
struct SlotWalk {
  static constexpr int CHUNKS = HEAD_DIM / VW;          // vectors per K/V row
  static constexpr int LPK = lanes_per_key(CHUNKS);     // lanes per slot
  static constexpr int CPL = CHUNKS / LPK;              // vectors per lane per row
  static constexpr int SLOTS = 32 / LPK;                // slots per warp
  static constexpr int U = kPagedAttentionUnroll;
  static_assert(HEAD_DIM % VW == 0, "vector width must divide HEAD_DIM");

  float m[GROUP];
  float l[GROUP];
  float acc[GROUP][CPL][VW];  // dims (c * LPK + lane % LPK) * VW + e

  // slot0: cluster-wide index of this warp's first slot; nslots: slots in the
  // cluster. Slot s takes keys lo + s, lo + s + nslots, ...
  __device__ __forceinline__ void run(const T* q_row, const T* k_cache, const T* v_cache,
                                      const int* pages, int kvh, int lo, int n, float scale,
                                      int slot0, int nslots) {
    const int lane = threadIdx.x & 31;
    const int sl = lane % LPK;
    const int slot = slot0 + lane / LPK;
    const int cnt = slot < n ? (n - slot + nslots - 1) / nslots : 0;
    // Trip count of the whole warp (its first slot has the most keys), so the
    // shuffles below always run with all 32 lanes.
    const int cnt0 = slot0 < n ? (n - slot0 + nslots - 1) / nslots : 0;

#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      m[g] = neg_inf();
      l[g] = 0.f;
#pragma unroll
      for (int c = 0; c < CPL; ++c)
#pragma unroll
        for (int e = 0; e < VW; ++e) acc[g][c][e] = 0.f;
    }
    if (cnt0 == 0) return;

    float qf[GROUP][CPL][VW];
#pragma unroll
    for (int g = 0; g < GROUP; ++g)
#pragma unroll
      for (int c = 0; c < CPL; ++c) {
        const Vec<T, VW> v = load_vec<VW>(q_row + g * HEAD_DIM, c * LPK + sl);
#pragma unroll
        for (int e = 0; e < VW; ++e) qf[g][c][e] = to_float(v.v[e]);
      }

    auto kv_off = [&](int j) -> long long {
      const long long page = pages[j / PAGE_SIZE];
      return ((page * PAGE_SIZE + j % PAGE_SIZE) * NUM_KV_HEADS + kvh) * HEAD_DIM;
    };
    // Keys past this slot's count re-read key lo (always a valid key) with
    // weight 0, so every load is unconditional and every value finite.
    const long long off_lo = kv_off(lo);

    for (int k0 = 0; k0 < cnt0; k0 += U) {
      long long off[U];
      bool valid[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        valid[u] = k0 + u < cnt;
        off[u] = valid[u] ? kv_off(lo + slot + (k0 + u) * nslots) : off_lo;
      }
      Vec<T, VW> kv[U][CPL], vv[U][CPL];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int c = 0; c < CPL; ++c) kv[u][c] = load_vec<VW>(k_cache + off[u], c * LPK + sl);
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int c = 0; c < CPL; ++c) vv[u][c] = load_vec<VW>(v_cache + off[u], c * LPK + sl);

      // Logits of the U keys for all heads.
      float s[U][GROUP];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int g = 0; g < GROUP; ++g) {
          float d = 0.f;
#pragma unroll
          for (int c = 0; c < CPL; ++c)
#pragma unroll
            for (int e = 0; e < VW; ++e) d = fmaf(qf[g][c][e], to_float(kv[u][c].v[e]), d);
          s[u][g] = d;
        }
#pragma unroll
      for (int o = LPK / 2; o > 0; o >>= 1)
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
          for (int g = 0; g < GROUP; ++g) s[u][g] += __shfl_xor_sync(0xffffffffu, s[u][g], o);

      // Online softmax update (same values in all lanes of a slot).
      float p[U][GROUP];
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        float mx = m[g];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          s[u][g] = valid[u] ? scale * s[u][g] : neg_inf();
          mx = fmaxf(mx, s[u][g]);
        }
        // mx == -inf only for a slot with no key yet and none in this step.
        const float alpha = m[g] == mx ? 1.f : expf(m[g] - mx);
        float sum = 0.f;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          p[u][g] = s[u][g] == neg_inf() ? 0.f : expf(s[u][g] - mx);
          sum += p[u][g];
        }
        l[g] = l[g] * alpha + sum;
        m[g] = mx;
#pragma unroll
        for (int c = 0; c < CPL; ++c)
#pragma unroll
          for (int e = 0; e < VW; ++e) acc[g][c][e] *= alpha;
      }
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int c = 0; c < CPL; ++c)
#pragma unroll
          for (int e = 0; e < VW; ++e) {
            const float vf = to_float(vv[u][c].v[e]);
#pragma unroll
            for (int g = 0; g < GROUP; ++g) acc[g][c][e] = fmaf(p[u][g], vf, acc[g][c][e]);
          }
    }

    // Merge the warp's slots (lanes l, l ^ LPK, l ^ 2 LPK, ... hold the same dims).
#pragma unroll
    for (int o = LPK; o < 32; o <<= 1) {
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        const float mo = __shfl_xor_sync(0xffffffffu, m[g], o);
        const float lo_ = __shfl_xor_sync(0xffffffffu, l[g], o);
        const float mx = fmaxf(m[g], mo);
        const float wa = m[g] == neg_inf() ? 0.f : expf(m[g] - mx);
        const float wb = mo == neg_inf() ? 0.f : expf(mo - mx);
        l[g] = l[g] * wa + lo_ * wb;
        m[g] = mx;
#pragma unroll
        for (int c = 0; c < CPL; ++c)
#pragma unroll
          for (int e = 0; e < VW; ++e) {
            const float other = __shfl_xor_sync(0xffffffffu, acc[g][c][e], o);
            acc[g][c][e] = acc[g][c][e] * wa + other * wb;
          }
      }
    }
  }
};

// Shared memory of one block.
template <int GROUP, int HEAD_DIM>
struct PagedAttentionSmem {
  static constexpr int WARPS = PagedAttentionCfg<HEAD_DIM>::kBlock / 32;
  // Heads whose warp accumulators fit at once (all of them for the usual
  // shapes; larger GROUP * HEAD_DIM are merged in several rounds).
  static constexpr int GC0 = (32 * 1024) / (WARPS * HEAD_DIM * 4);
  static constexpr int GC = GC0 < 1 ? 1 : (GC0 > GROUP ? GROUP : GC0);
  static_assert(WARPS * GC * HEAD_DIM * 4 <= 32 * 1024, "HEAD_DIM too large for this kernel");

  float wm[WARPS][GROUP];  // per-warp running max
  float wl[WARPS][GROUP];  // per-warp sum of exp(logit - m)
  float ww[WARPS][GROUP];  // exp(wm - block max)
  float wacc[WARPS][GC][HEAD_DIM];
  float bm[GROUP];         // the block's partial result, read by the whole cluster
  float bl[GROUP];
  float bacc[GROUP][HEAD_DIM];
};

// Steps 2b and 3, shared by the vectorised and the scalar walk.
template <int NUM_HEADS, int NUM_KV_HEADS, int HEAD_DIM, int PAGE_SIZE, int VW, typename T>
__device__ __forceinline__ void paged_attention_row(
    PagedAttentionSmem<NUM_HEADS / NUM_KV_HEADS, HEAD_DIM>& sm, const T* q_row, const T* k_cache,
    const T* v_cache, const int* pages, int kvh, int lo, int n, float scale, unsigned rank,
    T* out_row) {
  constexpr int GROUP = NUM_HEADS / NUM_KV_HEADS;
  constexpr int BLOCK = PagedAttentionCfg<HEAD_DIM>::kBlock;
  constexpr int WARPS = BLOCK / 32;
  constexpr int CLUSTER = LLMC_PAGED_ATTENTION_CLUSTERS ? kPagedAttentionCluster : 1;
  using Walk = SlotWalk<GROUP, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, VW, T>;
  constexpr int LPK = Walk::LPK;
  constexpr int CPL = Walk::CPL;
  constexpr int GC = PagedAttentionSmem<GROUP, HEAD_DIM>::GC;
  constexpr int ROUNDS = (GROUP + GC - 1) / GC;
  auto& wm = sm.wm;
  auto& wl = sm.wl;
  auto& ww = sm.ww;
  auto& wacc = sm.wacc;
  auto& bm = sm.bm;
  auto& bl = sm.bl;
  auto& bacc = sm.bacc;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int nslots = CLUSTER * WARPS * Walk::SLOTS;
  Walk w;
  w.run(q_row, k_cache, v_cache, pages, kvh, lo, n, scale,
        (static_cast<int>(rank) * WARPS + warp) * Walk::SLOTS, nslots);

  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      wm[warp][g] = w.m[g];
      wl[warp][g] = w.l[g];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < WARPS * GROUP; i += BLOCK) {
    const int g = i % GROUP;
    float mx = neg_inf();
#pragma unroll
    for (int v = 0; v < WARPS; ++v) mx = fmaxf(mx, wm[v][g]);
    const float mv = wm[i / GROUP][g];
    ww[i / GROUP][g] = mv == neg_inf() ? 0.f : expf(mv - mx);
    if (i < GROUP) bm[g] = mx;
  }
#pragma unroll
  for (int r = 0; r < ROUNDS; ++r) {
    if (lane < LPK) {
#pragma unroll
      for (int g = r * GC; g < (r + 1) * GC && g < GROUP; ++g)
#pragma unroll
        for (int c = 0; c < CPL; ++c)
#pragma unroll
          for (int e = 0; e < VW; ++e) wacc[warp][g - r * GC][(c * LPK + lane) * VW + e] = w.acc[g][c][e];
    }
    __syncthreads();  // also publishes ww / bm on the first round
    const int heads = (r + 1) * GC <= GROUP ? GC : GROUP - r * GC;
    for (int i = threadIdx.x; i < heads * HEAD_DIM; i += BLOCK) {
      const int gl = i / HEAD_DIM;
      const int d = i % HEAD_DIM;
      float a = 0.f;
#pragma unroll
      for (int v = 0; v < WARPS; ++v) a += ww[v][r * GC + gl] * wacc[v][gl][d];
      bacc[r * GC + gl][d] = a;
    }
    if (r + 1 < ROUNDS) __syncthreads();  // wacc is rewritten by the next round
  }
  for (int g = threadIdx.x; g < GROUP; g += BLOCK) {
    float s = 0.f;
#pragma unroll
    for (int v = 0; v < WARPS; ++v) s += ww[v][g] * wl[v][g];
    bl[g] = s;
  }

  // Step 3: block `rank` finalises outputs [rank * PER, (rank + 1) * PER).
  if constexpr (CLUSTER > 1) {
    cluster_sync();
  } else {
    __syncthreads();
  }
  constexpr int TOTAL = GROUP * HEAD_DIM;
  constexpr int PER = (TOTAL + CLUSTER - 1) / CLUSTER;
  for (int k = threadIdx.x; k < PER; k += BLOCK) {
    const int i = static_cast<int>(rank) * PER + k;
    if (i < TOTAL) {
      const int g = i / HEAD_DIM;
      const int d = i % HEAD_DIM;
      float mr[CLUSTER];
      float mx = neg_inf();
#pragma unroll
      for (int b = 0; b < CLUSTER; ++b) {
        mr[b] = CLUSTER > 1 ? *map_rank(&bm[g], b) : bm[g];
        mx = fmaxf(mx, mr[b]);
      }
      float o = 0.f, den = 0.f;
#pragma unroll
      for (int b = 0; b < CLUSTER; ++b) {
        const float wb = mr[b] == neg_inf() ? 0.f : expf(mr[b] - mx);
        const float ab = CLUSTER > 1 ? *map_rank(&bacc[g][d], b) : bacc[g][d];
        const float lb = CLUSTER > 1 ? *map_rank(&bl[g], b) : bl[g];
        o += wb * ab;
        den += wb * lb;
      }
      out_row[i] = from_float<T>(den > 0.f ? o / den : 0.f);
    }
  }
  // No block may exit (releasing its shared memory) while others read it.
  if constexpr (CLUSTER > 1) cluster_sync();
}

}  // namespace paged_attention_detail

// grid = (tokens * kPagedAttentionCluster, NUM_KV_HEADS), clusters of
// (kPagedAttentionCluster, 1, 1): cluster t serves token t.
template <int NUM_HEADS, int NUM_KV_HEADS, int HEAD_DIM, int PAGE_SIZE, typename T>
__global__ void LLMC_PAGED_ATTENTION_CLUSTER_DIMS __launch_bounds__(PagedAttentionCfg<HEAD_DIM>::kBlock)
    paged_attention(const T* q, const T* k_cache, const T* v_cache, const int* positions,
                    const int* qo_indptr, const int* kv_indptr, const int* kv_page_indices,
                    const int* kv_last_page_len, T* out, float scale, int sliding_window,
                    int num_tokens, int num_seqs) {
  static_assert(NUM_HEADS % NUM_KV_HEADS == 0, "GQA needs NUM_HEADS % NUM_KV_HEADS == 0");
  constexpr int GROUP = NUM_HEADS / NUM_KV_HEADS;
  namespace pad = paged_attention_detail;

#if LLMC_PAGED_ATTENTION_CLUSTERS
  const unsigned rank = pad::cluster_rank();
#else
  if (blockIdx.x % kPagedAttentionCluster != 0) return;
  const unsigned rank = 0;
#endif
  const int t = blockIdx.x / kPagedAttentionCluster;
  const int kvh = blockIdx.y;
  if (t >= num_tokens) return;  // the whole cluster alike

  const int seq = find_seq(qo_indptr, num_seqs, t);
  const int pos = positions[t];
  const int kv_len = seq_kv_len(kv_indptr, kv_last_page_len, seq, PAGE_SIZE);
  const int hi = min(pos, kv_len - 1);
  const int lo = sliding_window > 0 ? max(0, pos - sliding_window + 1) : 0;
  const int n = hi >= lo ? hi - lo + 1 : 0;
  const int* pages = kv_page_indices + kv_indptr[seq];

  // The GROUP query heads of kv head kvh are contiguous in the q row.
  const long long row = static_cast<long long>(t) * (NUM_HEADS * HEAD_DIM) +
                        static_cast<long long>(kvh) * (GROUP * HEAD_DIM);
  __shared__ pad::PagedAttentionSmem<GROUP, HEAD_DIM> sm;
  constexpr int VW = pad::vector_width<T, HEAD_DIM>();
  if (VW > 1 && is_aligned(q, VW * sizeof(T)) && is_aligned(k_cache, VW * sizeof(T)) &&
      is_aligned(v_cache, VW * sizeof(T))) {
    pad::paged_attention_row<NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, VW>(
        sm, q + row, k_cache, v_cache, pages, kvh, lo, n, scale, rank, out + row);
  } else {
    pad::paged_attention_row<NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, 1>(
        sm, q + row, k_cache, v_cache, pages, kvh, lo, n, scale, rank, out + row);
  }
}

}  // namespace llmc_kernels

#endif  // __CUDACC__

// ---- launch geometry (host and device) ----
namespace llmc_kernels {

// Cluster t (blocks [t * C, (t + 1) * C), C = kPagedAttentionCluster) serves
// token t; grid.x is a multiple of C as __cluster_dims__ requires.
constexpr LaunchShape paged_attention_launch(int num_kv_heads, int head_dim) {
  LaunchShape s;
  s.grid_x = SymExpr{kPagedAttentionCluster, 0, 0, 1};  // one cluster per query row
  s.grid_y = SymExpr{0, 0, num_kv_heads, 1};            // one GQA group (kv head) each
  s.block_threads = paged_attention_block_threads(head_dim);
  return s;
}

}  // namespace llmc_kernels
