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
// Tiles. A work item is a tile of up to TILE_TOKENS consecutive query tokens
// of one sequence; under each kv head its rows are the (token, query head)
// pairs, GROUP = NUM_HEADS / NUM_KV_HEADS heads a token and at most 16 rows
// in all, so each K/V element a warp loads serves all of the tile's rows:
// the GROUP heads of a decode token, and neighbouring tokens in a prefill.
// Tiles of sequence s are numbered from
//   item_start(s) = (qo_indptr[s] + (TILE_TOKENS - 1) * s) / TILE_TOKENS,
// which leaves room for ceil(q_len(s) / TILE_TOKENS) tiles per sequence
// (decode: tile s is token s); a tile past its sequence's tokens exits.
//
// A block has one warp per kv head (up to 4; block row y serves kv heads
// 4y .. 4y + 3), which share the tile's metadata and nothing else. A
// thread-block cluster of C blocks serves each tile (C = 1..8, chosen by
// the runtime at launch: many blocks a tile for a small batch, one for a
// large one); block r walks the 16-key pages r, r + C, ...:
//   1. each warp keeps an online softmax per row (running max m, sum l, an
//      fp32 accumulator) over its pages. With bf16/f16 and the usual shapes
//      it runs on tensor cores (MmaWalk: S = Q K^T and O += P V as m16n8k16
//      MMAs, the tile's rows padded to 16). The warp copies each 16-key page
//      of K and V into its own ring of kPagedAttentionStages buffers in
//      shared memory with cp.async, two pages ahead of the math, and reads
//      the MMA operands back with ldmatrix; the page-table entries of its
//      pages are loaded 32 at a time, one per lane, and passed round by
//      shuffles, so no K/V load waits on a page-index load and the operands
//      in flight take no registers. Otherwise (fp32, small or odd head dims,
//      misaligned pointers) a SIMT walk (SlotWalk) serves the tile one
//      token at a time. Without a cluster the warp then holds whole rows
//      and writes them: no barrier;
//   2. with a cluster, each warp leaves its partials in its shared memory
//      (over its ring, which it no longer needs) and, after a cluster
//      barrier, block r combines the partials of all ranks (read through
//      distributed shared memory) for its 1/C share of the block's outputs,
//      normalises and writes them once.
// Prefill on tensor cores without a cluster (a sequence with more than one
// tile) goes otherwise, so that K/V are not fetched once per tile: with W
// warps a block (4 for 4 or more kv heads), the block of every W-th tile of
// the sequence serves that tile and the next W - 1 (their blocks exit), one
// warp a tile, under each of its kv heads in turn; the block fills one ring
// for all its warps (kPagedAttentionSharedStages buffers of up to 4 pages
// over the same shared memory, a barrier a buffer; a warp updates its
// softmax once a buffer), and each warp skips the buffers outside its own
// tile's keys. On sm_90a, with 4 or more kv heads (4 warps a block) and
// head dims of 64 or 128, the 4 warps are one warpgroup instead: they take
// each buffer together as wgmma tiles (64 rows by 64 keys), the buffer laid
// out for wgmma (SwizzledStage) rather than as page buffers, and a stage's
// softmax runs while the previous stage's P V runs on the tensor cores
// (copies then run one stage ahead instead of two).
// Logits are kept in log2 units (scaled by log2(e)) so every exponential is
// a base-2 one (on tensor cores the MUFU instruction itself, ex2.approx).
#pragma once

namespace llmc_kernels {

// Blocks of up to 4 kv heads (one warp each): Llama 3 and Qwen2 have 2 to 8
// kv heads. Clusters of 16 (beyond the portable 8) only where the grid
// still fits one block a multiprocessor (cluster_blocks): they cut batch-1
// decode at context 4096 by 7% and, taken for batch 8 as well, hurt it
// (docs/PERF.md).
constexpr int kPagedAttentionMaxCluster = 16;  // blocks per tile
constexpr int kPagedAttentionWarps = 4;       // warps (kv heads) per block at most
constexpr int kPagedAttentionUnroll = 4;      // SIMT walk: keys per slot per step
constexpr int kPagedAttentionTileRows = 16;   // query rows of one MMA tile
// Pages of K/V a tensor-core warp holds in shared memory: the one it works
// on and two in flight. With 128-dim heads a block of 4 warps takes 96 KB,
// so two blocks (8 warps, 16 pages in flight) share a multiprocessor.
constexpr int kPagedAttentionStages = 3;
// Buffers (of up to 4 pages) in the ring a whole block shares in prefill.
constexpr int kPagedAttentionSharedStages = 3;

// Query tokens a work item serves: as many as fill 16 rows with their GQA
// group (1 when the group alone has 16 or more heads).
constexpr int paged_attention_tile_tokens(int num_heads, int num_kv_heads) {
  const int group = num_heads / num_kv_heads;
  return group >= kPagedAttentionTileRows ? 1 : kPagedAttentionTileRows / group;
}

// One warp per kv head, up to kPagedAttentionWarps kv heads a block.
constexpr int paged_attention_block_threads(int num_kv_heads) {
  return 32 * (num_kv_heads < kPagedAttentionWarps ? num_kv_heads : kPagedAttentionWarps);
}

// Query rows of a tile under one kv head: its tokens' GQA groups.
constexpr int paged_attention_tile_rows(int num_heads, int num_kv_heads) {
  return num_heads / num_kv_heads * paged_attention_tile_tokens(num_heads, num_kv_heads);
}

// Bytes of one 16-key page of K and V under one kv head in shared memory.
constexpr int paged_attention_page_bytes(int head_dim, int dtype_bytes) {
  return 2 * 16 * head_dim * dtype_bytes;
}

// Whether the tensor-core walk serves these shapes: 16-bit dtypes, and the
// warps' rings fit in a block's shared memory (head dims up to 256).
constexpr bool paged_attention_uses_mma(int num_heads, int num_kv_heads, int head_dim,
                                        int page_size, int dtype_bytes) {
  const int rings = paged_attention_block_threads(num_kv_heads) / 32 * kPagedAttentionStages *
                    paged_attention_page_bytes(head_dim, dtype_bytes);
  return dtype_bytes == 2 && head_dim % 64 == 0 && page_size % 16 == 0 &&
         paged_attention_tile_rows(num_heads, num_kv_heads) <= kPagedAttentionTileRows &&
         rings <= 200 * 1024;
}

// Shared memory of one warp: its ring of K/V pages (tensor-core walk) or,
// after its walk, the partials of its rows (cluster split): m, l and an fp32
// accumulator a row. The host does not know the dtype and asks with 2 bytes,
// an upper bound (only 16-bit dtypes have a ring).
constexpr int paged_attention_warp_bytes(int num_heads, int num_kv_heads, int head_dim,
                                         int page_size, int dtype_bytes) {
  const int partials = paged_attention_tile_rows(num_heads, num_kv_heads) * (head_dim + 2) * 4;
  const int ring =
      paged_attention_uses_mma(num_heads, num_kv_heads, head_dim, page_size, dtype_bytes)
          ? kPagedAttentionStages * paged_attention_page_bytes(head_dim, dtype_bytes)
          : 0;
  return ((partials > ring ? partials : ring) + 127) / 128 * 128;
}

// A 64-key stage of the wgmma prefill walk in shared memory: the K rows, then
// the V rows (V_ROWS on), each in PTX's canonical layout with 128-byte
// swizzle: 64-dim column blocks of COLUMN_BYTES; in each, a key's 8 chunks
// of 16 bytes fill one 128-byte line with chunk c at c ^ (key % 8), so
// neither the copies nor the MMAs' operand reads meet bank conflicts (the
// swizzle runs on address bits: stages are 1024-byte aligned). Page p of the
// stage is keys 16 p .. 16 p + 15 (page_rows(p) into the K or V rows). Read
// as S = Q K^T's B operand (K-major, n = keys), k-step st (dims 16 st ..)
// starts at k_step(st); as O = P V's (MN-major, k = keys), the k-step of
// page p over dims 64 h .. 64 h + 63 at v_step(h, p).
template <int HEAD_DIM>
struct SwizzledStage {
  static constexpr unsigned COLUMN_BYTES = 64 * 128;  // 64 keys of one column block
  static constexpr unsigned GROUP_BYTES = 8 * 128;     // 8 keys, one swizzle period
  static constexpr unsigned V_ROWS = HEAD_DIM / 64 * COLUMN_BYTES;
  static constexpr unsigned BYTES = 2 * V_ROWS;

  static constexpr unsigned offset(int key, int chunk) {
    return static_cast<unsigned>(chunk / 8) * COLUMN_BYTES + static_cast<unsigned>(key) * 128u +
           static_cast<unsigned>((chunk % 8) ^ (key % 8)) * 16u;
  }
  static constexpr unsigned page_rows(int p) { return static_cast<unsigned>(p) * 2 * GROUP_BYTES; }
  static constexpr unsigned k_step(int st) {
    return static_cast<unsigned>(st / 4) * COLUMN_BYTES + static_cast<unsigned>(st % 4) * 32u;
  }
  static constexpr unsigned v_step(int h, int p) {
    return V_ROWS + static_cast<unsigned>(h) * COLUMN_BYTES + page_rows(p);
  }
  // The wgmma descriptor of an operand starting at shared address addr
  // (PTX ISA, "Matrix Descriptor Format"): start address, leading byte
  // offset (column blocks; used by MN-major operands wider than one),
  // stride byte offset (groups of 8 keys), all in 16-byte units; base
  // offset 0 (aligned stages); swizzle mode 1 (128 bytes).
  static constexpr unsigned long long descriptor(unsigned addr) {
    return static_cast<unsigned long long>((addr >> 4) & 0x3fff) |
           static_cast<unsigned long long>(COLUMN_BYTES >> 4) << 16 |
           static_cast<unsigned long long>(GROUP_BYTES >> 4) << 32 | 1ull << 62;
  }
};

}  // namespace llmc_kernels

#ifdef __CUDACC__

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define LLMC_PAGED_ATTENTION_MMA 1
#else
#define LLMC_PAGED_ATTENTION_MMA 0
#endif
// wgmma exists only in the arch-specific sm_90a target (the runtime compiles
// for it on compute capability 9.0).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LLMC_PAGED_ATTENTION_WGMMA 1
#else
#define LLMC_PAGED_ATTENTION_WGMMA 0
#endif

namespace llmc_kernels {
namespace paged_attention_detail {

constexpr float kLog2e = 1.4426950408889634f;

// ---- the work item ---------------------------------------------------------------

__device__ __forceinline__ int item_start(const int* qo_indptr, int s, int tile_tokens) {
  return (qo_indptr[s] + (tile_tokens - 1) * s) / tile_tokens;
}

// Sequence of tile `item`: the largest s in [0, num_seqs) with
// item_start(s) <= item (tile_start does not decrease with s). Whole warps.
__device__ __forceinline__ int find_item_seq(const int* qo_indptr, int num_seqs, int item,
                                             int tile_tokens) {
  return warp_search_last_le(num_seqs, item,
                             [&](int s) { return item_start(qo_indptr, s, tile_tokens); });
}

// Tokens t0 .. t0 + tokens - 1 of one sequence and their key ranges; row
// r = i * GROUP + g is query head kvh * GROUP + g of token t0 + i.
template <int TQ>
struct Tile {
  int t0;
  int tokens;
  int lo[TQ];  // keys of token i: [lo[i], hi[i]] (empty for i >= tokens)
  int hi[TQ];
  int klo;     // union of the tokens' key ranges
  int khi;
};

// A warp's partial results for its rows, left in shared memory when a
// cluster splits the keys (paged_attention_warp_bytes counts them).
template <int ROWS, int HEAD_DIM>
struct Partials {
  float m[ROWS];  // running max (log2 units)
  float l[ROWS];  // sum of exp2(logit - m)
  float acc[ROWS][HEAD_DIM];
};

// ---- SIMT walk (any dtype and head dim) --------------------------------------------

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

// One token's GROUP heads. The keys [lo, lo + n) are dealt round-robin to
// "slots": a slot is a group of LPK lanes of one warp (LPK = lanes that cover
// HEAD_DIM in vectors of VW elements), so each warp runs 32 / LPK slots. Each
// slot keeps its own online softmax, kPagedAttentionUnroll keys a step with
// all their K and V loads issued together; logits are reduced across the
// slot's lanes with shuffles, and the warp's slots are merged with shuffles
// at the end: every lane then holds the warp's (m, l) and lanes 0..LPK-1 its
// accumulators. VW = 1 when the pointers are not vector-aligned.
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

  // warp0: index of this warp among the item's nwarps warps.
  __device__ __forceinline__ void run(const T* q_row, const T* k_cache, const T* v_cache,
                                      const int* pages, int kvh, int lo, int n, float scale_log2,
                                      int warp0, int nwarps) {
    const int lane = threadIdx.x & 31;
    const int sl = lane % LPK;
    const int slot0 = warp0 * SLOTS;
    const int nslots = nwarps * SLOTS;
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
          s[u][g] = valid[u] ? scale_log2 * s[u][g] : neg_inf();
          mx = fmaxf(mx, s[u][g]);
        }
        // mx == -inf only for a slot with no key yet and none in this step.
        const float alpha = m[g] == mx ? 1.f : exp2f(m[g] - mx);
        float sum = 0.f;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          p[u][g] = s[u][g] == neg_inf() ? 0.f : exp2f(s[u][g] - mx);
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
        const float wa = m[g] == neg_inf() ? 0.f : exp2f(m[g] - mx);
        const float wb = mo == neg_inf() ? 0.f : exp2f(mo - mx);
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

  // The normalised output of this token's GROUP heads (no other block holds
  // a part of them), from lanes 0..LPK-1; out_row = the token's first head
  // of this kv head.
  __device__ __forceinline__ void write(T* out_row) const {
    const int lane = threadIdx.x & 31;
    if (lane >= LPK) return;
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      const float inv = l[g] > 0.f ? 1.f / l[g] : 0.f;
#pragma unroll
      for (int c = 0; c < CPL; ++c)
#pragma unroll
        for (int e = 0; e < VW; ++e)
          out_row[g * HEAD_DIM + (c * LPK + lane) * VW + e] = from_float<T>(acc[g][c][e] * inv);
    }
  }

  // The warp's partials into rows row0 .. row0 + GROUP - 1.
  template <int ROWS>
  __device__ __forceinline__ void store(Partials<ROWS, HEAD_DIM>& part, int row0) const {
    const int lane = threadIdx.x & 31;
    if (lane == 0) {
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        part.m[row0 + g] = m[g];
        part.l[row0 + g] = l[g];
      }
    }
    if (lane < LPK) {
#pragma unroll
      for (int g = 0; g < GROUP; ++g)
#pragma unroll
        for (int c = 0; c < CPL; ++c)
#pragma unroll
          for (int e = 0; e < VW; ++e) part.acc[row0 + g][(c * LPK + lane) * VW + e] = acc[g][c][e];
    }
  }
};

// ---- tensor-core walk (bf16/f16, HEAD_DIM % 64 == 0, 16-key pages) -------------------

#if LLMC_PAGED_ATTENTION_MMA
// d += a b for one m16n8k16 tile: a = 4 registers of packed T pairs (rows
// lane / 4 and lane / 4 + 8), b = 2 (column lane / 4), d fp32.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                          unsigned b1);
#define LLMC_MMA_16816(TYPE)                                                                  \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE                          \
               ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"                    \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                               \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const unsigned (&a)[4],
                                                         unsigned b0, unsigned b1) {
  LLMC_MMA_16816("bf16");
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const unsigned (&a)[4],
                                                  unsigned b0, unsigned b1) {
  LLMC_MMA_16816("f16");
}
#undef LLMC_MMA_16816

// (lo, hi) rounded to T and packed as the MMA operands hold them.
template <typename T>
__device__ __forceinline__ unsigned pack2(float lo, float hi);
template <>
__device__ __forceinline__ unsigned pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&v);
}
template <>
__device__ __forceinline__ unsigned pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&v);
}

// 2^x in one MUFU instruction (denormal results flush to 0; -inf gives 0).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// ---- asynchronous copies and shared-memory operand loads (sm_80+) ----

// 16 bytes from global to shared memory without passing through registers;
// zeros when !valid (then nothing is read). L1 is bypassed: K/V are read once.
__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Four 8x8 matrices of 16-bit elements; lanes 8i .. 8i + 7 give the row
// addresses of matrix i. Lane (g, qd) receives row g, columns 2qd and 2qd + 1
// of each (TRANS: column g, rows 2qd and 2qd + 1).
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
  if constexpr (TRANS) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  }
}

// The page-table entries of a walk over 16-key pages first, first + step,
// ... (count of them): loaded 32 at a time, one a lane, and handed out by
// shuffles, so no K/V copy waits on a page-index load. at(i) is called by
// whole warps for i = 0, 1, 2, ... in order.
template <int PAGE_SIZE>
struct WalkPages {
  const int* pages;  // the sequence's page table
  int first, step, count;
  int lane_page = 0;  // entry of walk page (i / 32) * 32 + lane

  __device__ __forceinline__ long long at(int i) {
    if (i % 32 == 0) {
      const int j = i + (threadIdx.x & 31);
      lane_page = j < count ? pages[(first + j * step) * 16 / PAGE_SIZE] : 0;
    }
    return __shfl_sync(0xffffffffu, lane_page, i % 32);
  }
};

// A page buffer in shared memory: the 16 K rows, then the 16 V rows, of one
// 16-key page under one kv head, HEAD_DIM elements a row; each row's 16-byte
// chunks are XOR-swizzled by key so that the 8 rows one ldmatrix phase reads
// fall in distinct banks.
template <int HEAD_DIM, typename T>
struct PageBuffer {
  static constexpr int CHUNKS = HEAD_DIM / 8;                        // 16-byte chunks of a row
  static constexpr unsigned BYTES = paged_attention_page_bytes(HEAD_DIM, sizeof(T));
  static constexpr unsigned HALF_BYTES = BYTES / 2;  // the K (or V) rows

  static __device__ __forceinline__ unsigned offset(int key, int chunk) {
    return static_cast<unsigned>(key * CHUNKS + (chunk ^ (key & 7))) * 16u;
  }
};

// Starts copying the 16 keys from position `base` (page-table entry `page`)
// of kv head kvh: K rows to shared address k_dst, V rows to v_dst, each in
// Layout. Keys outside [klo, khi] (the ends of the range; slots of the last
// page not written yet) are zero-filled, not read: every product stays
// finite. Threads tid = 0 .. THREADS - 1 share the chunks, consecutive
// threads a key's consecutive chunks, so a warp reads whole 32-byte sectors.
template <typename Layout, int NUM_KV_HEADS, int HEAD_DIM, int PAGE_SIZE, int THREADS, typename T>
__device__ __forceinline__ void copy_page(unsigned k_dst, unsigned v_dst, const T* k_cache,
                                          const T* v_cache, long long page, int base, int kvh,
                                          int klo, int khi, int tid) {
  constexpr int CHUNKS = HEAD_DIM / 8;
  const long long key0 = (page * PAGE_SIZE + base % PAGE_SIZE) * NUM_KV_HEADS + kvh;
#pragma unroll
  for (int c0 = 0; c0 < 16 * CHUNKS; c0 += THREADS) {
    const int c = c0 + tid;
    if (16 * CHUNKS % THREADS != 0 && c >= 16 * CHUNKS) break;
    const int key = c / CHUNKS, chunk = c % CHUNKS;
    const bool ok = base + key >= klo && base + key <= khi;
    const long long src = (key0 + key * NUM_KV_HEADS) * HEAD_DIM + chunk * 8;
    const unsigned at = Layout::offset(key, chunk);
    cp_async_16(k_dst + at, k_cache + src, ok);
    cp_async_16(v_dst + at, v_cache + src, ok);
  }
}

// Copies and math over a ring of STAGES buffers: issue(i) starts the copies
// of stage i into buffer i % STAGES while consume(i) works on the stage
// STAGES - 1 behind. One commit group a stage (empty ones past the end), so
// once at most STAGES - 2 groups are in flight, stage i has landed; sync()
// (the barrier of the threads sharing the ring: a warp's or the block's)
// then shows it to all of them and frees stage i - 1's buffer for reuse.
// Returns with every copy landed and the ring free.
template <int STAGES, typename Issue, typename Sync, typename Consume>
__device__ __forceinline__ void run_pipeline(int stages, Issue&& issue, Sync&& sync,
                                             Consume&& consume) {
  static_assert(STAGES >= 2, "the ring needs a buffer in flight");
#pragma unroll
  for (int i = 0; i < STAGES - 1; ++i) {
    if (i < stages) issue(i);
    cp_async_commit();
  }
  for (int i = 0; i < stages; ++i) {
    cp_async_wait<STAGES - 2>();
    sync();
    if (i + STAGES - 1 < stages) issue(i + STAGES - 1);
    cp_async_commit();
    consume(i);
  }
  cp_async_wait<0>();
  sync();
}

// ---- warpgroup MMAs (sm_90a: wgmma) ----
//
// D (64 x 64, fp32) += A (64 x 16, registers) B (16 x 64, shared memory),
// issued by the 4 warps of a warpgroup together; warp w holds rows 16w ..
// 16w + 15 of A and D in mma_16816's fragment layouts (D as 8 n-tiles of
// 8 columns). B is described by a shared-memory descriptor (SwizzledStage);
// TRANS_B: B is MN-major (V) rather than K-major (K). Declared everywhere
// and defined only where the instructions exist, so callers name it in
// branches that other targets discard.
template <typename T>
struct Wgmma;

#if LLMC_PAGED_ATTENTION_WGMMA
template <typename T>
struct Wgmma {
  // Shared-memory writes of this thread (cp.async included) become visible
  // to the wgmma operand reads that follow a barrier.
  static __device__ __forceinline__ void fence_shared_for_operands() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  }

  // Registers written since the last wgmma (accumulators, A) are final.
  static __device__ __forceinline__ void fence() {
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
  }

  // Closes the group of MMAs issued since the last commit.
  static __device__ __forceinline__ void commit() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
  }

  // Waits until at most N committed groups are still running.
  template <int N>
  static __device__ __forceinline__ void wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
  }

  // Pins registers at this point of the instruction stream: before fence(),
  // so that no write of an accumulator or A fragment sinks past it (else
  // ptxas must insert a warpgroup arrive of its own); after wait(), so that
  // no read of an accumulator rises above it.
  template <int N>
  static __device__ __forceinline__ void settle(float (&d)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
  }
  template <int N>
  static __device__ __forceinline__ void settle(unsigned (&a)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(a[i][e])::"memory");
  }

  template <bool TRANS_B>
  static __device__ __forceinline__ void mma_64x64x16(float (*d)[4], const unsigned (&a)[4],
                                                      unsigned long long b);
};

#define LLMC_WGMMA_64x64x16(TYPE)                                                             \
  asm volatile(                                                                               \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE                              \
      " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,"  \
      "%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, 1, 1, 1, %37;"            \
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]),             \
        "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]),             \
        "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]),             \
        "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),             \
        "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]),             \
        "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),             \
        "+f"(d[7][2]), "+f"(d[7][3])                                                          \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TRANS_B ? 1 : 0))
template <>
template <bool TRANS_B>
__device__ __forceinline__ void Wgmma<__nv_bfloat16>::mma_64x64x16(float (*d)[4],
                                                                   const unsigned (&a)[4],
                                                                   unsigned long long b) {
  LLMC_WGMMA_64x64x16("bf16");
}
template <>
template <bool TRANS_B>
__device__ __forceinline__ void Wgmma<__half>::mma_64x64x16(float (*d)[4], const unsigned (&a)[4],
                                                            unsigned long long b) {
  LLMC_WGMMA_64x64x16("f16");
}
#undef LLMC_WGMMA_64x64x16
#endif  // LLMC_PAGED_ATTENTION_WGMMA

// A warp's rows of one tile under one kv head, walked over 16-key pages on
// tensor cores in the standard fragment layouts: lane l works on rows
// g = l / 4 and g + 8 and quad column qd = l % 4.
//   S = Q K^T: Q (A operand) stays in registers; K (B operand, keys as n)
//   comes from a page buffer's K rows by ldmatrix.
//   O += P V: P (A operand) is S's accumulator repacked; V (B operand, keys
//   as k) comes from the V rows by ldmatrix.trans. Lane (g, qd) accumulates
//   dims 8 nt + 2qd and 8 nt + 2qd + 1 of rows g and g + 8 (n-tile nt).
// begin() loads Q, step() takes page buffers (PageBuffer's layout),
// finish() completes the row sums; where the buffers come from is the
// caller's: a warp's own ring (walk_own_pages) or a block's (prefill). On
// sm_90a the 4 warps of a prefill block take a stage together instead
// (walk_warpgroup: the same fragments, computed by wgmma from SwizzledStage).
template <int GROUP, int TQ, int NUM_KV_HEADS, int HEAD_DIM, int PAGE_SIZE, typename T>
struct MmaWalk {
  static constexpr int ROWS = GROUP * TQ;
  static constexpr int KSTEPS = HEAD_DIM / 16;  // k-steps of S = Q K^T
  static constexpr int NT = HEAD_DIM / 8;       // n-tiles of O = P V
  using Buffer = PageBuffer<HEAD_DIM, T>;
  static_assert(ROWS <= 16 && HEAD_DIM % 64 == 0 && PAGE_SIZE % 16 == 0 && sizeof(T) == 2,
                "shape the tensor-core walk does not fit");

  float m[2];  // rows g, g + 8 (log2 units)
  float l[2];  // this lane's share until finish()
  float o[NT][4];
  float pending[2];  // O's factors from a deferred softmax step
  int rlo[2], rhi[2];  // key ranges of rows g, g + 8 (empty for padding rows)
  int lo_all, hi_all;  // keys in the ranges of all the warp's real rows
  unsigned qa[KSTEPS][4];

  __device__ __forceinline__ void begin(const T* q, int q_stride, int kvh, const Tile<TQ>& tile) {
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2;
    const int qd = lane & 3;
    // Keys every real row sees: a step inside [lo_all, hi_all] needs no mask
    // (a real row without keys leaves the range empty, so it gets zeros).
    int lo = -0x7fffffff - 1, hi = 0x7fffffff;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = g + 8 * h;
      const int token = row / GROUP;
      m[h] = neg_inf();
      l[h] = 0.f;
      const bool real = row < ROWS && token < tile.tokens;
      rlo[h] = real ? tile.lo[token < TQ ? token : 0] : 1;
      rhi[h] = real ? tile.hi[token < TQ ? token : 0] : 0;
      if (real) lo = max(lo, rlo[h]), hi = min(hi, rhi[h]);
      const T* q_row = q + static_cast<long long>(tile.t0 + (real ? token : 0)) * q_stride +
                       (kvh * GROUP + row % GROUP) * HEAD_DIM + 2 * qd;
#pragma unroll
      for (int st = 0; st < KSTEPS; ++st) {
        qa[st][h] = real ? *reinterpret_cast<const unsigned*>(q_row + 16 * st) : 0u;
        qa[st][2 + h] = real ? *reinterpret_cast<const unsigned*>(q_row + 16 * st + 8) : 0u;
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nt][e] = 0.f;
    lo_all = __reduce_max_sync(0xffffffffu, lo);
    hi_all = __reduce_min_sync(0xffffffffu, hi);
  }

  // The online softmax of S's rows (g and g + 8; a row's keys sit in the 4
  // lanes of a quad) over keys base .. base + 16 PAGES - 1: S becomes
  // P = exp2(S - m), m the new running max, and O and l are rescaled.
  // MASKED: keys outside a row's range count as -inf (a row may then have
  // no key yet: m stays -inf and P is 0); otherwise all keys are in range.
  // Max and sum run as four independent chains, not one.
  // DEFER: O is not rescaled here; the factor waits in `pending` for
  // rescale_o() (the warpgroup walk rescales O between MMAs).
  template <int PAGES, bool MASKED, bool DEFER = false>
  __device__ __forceinline__ void softmax(float (&s)[2 * PAGES][4], int base, float scale_log2) {
    constexpr int N = 4 * PAGES;  // a lane's elements of one row
    const int qd = threadIdx.x & 3;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float part[4] = {m[h], neg_inf(), neg_inf(), neg_inf()};
#pragma unroll
      for (int i = 0; i < N; ++i) {
        float& x = s[i / 2][2 * h + i % 2];
        x *= scale_log2;
        if constexpr (MASKED) {
          const int key = base + (i / 2) * 8 + 2 * qd + i % 2;
          if (key < rlo[h] || key > rhi[h]) x = neg_inf();
        }
        part[i % 4] = fmaxf(part[i % 4], x);
      }
      float mx = fmaxf(fmaxf(part[0], part[1]), fmaxf(part[2], part[3]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // exp2(-inf - 0) = 0 covers a row with no key so far.
      const float shift = MASKED && mx == neg_inf() ? 0.f : mx;
      const float alpha = exp2_approx(m[h] - shift);
#pragma unroll
      for (int i = 0; i < 4; ++i) part[i] = 0.f;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        float& x = s[i / 2][2 * h + i % 2];
        x = exp2_approx(x - shift);
        part[i % 4] += x;
      }
      l[h] = l[h] * alpha + ((part[0] + part[1]) + (part[2] + part[3]));
      m[h] = mx;
      if constexpr (DEFER) {
        pending[h] = alpha;
      } else {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          o[nt][2 * h] *= alpha;
          o[nt][2 * h + 1] *= alpha;
        }
      }
    }
  }

  // softmax() over keys base .., without the per-key mask where every key
  // lies in every real row's range (all steps but the ends of a walk);
  // DEFER as there.
  template <int PAGES, bool DEFER = false>
  __device__ __forceinline__ void update(float (&s)[2 * PAGES][4], int base, float scale_log2) {
    if (base >= lo_all && base + 16 * PAGES - 1 <= hi_all)
      softmax<PAGES, false, DEFER>(s, base, scale_log2);
    else
      softmax<PAGES, true, DEFER>(s, base, scale_log2);
  }

  // P's A fragment for page p (keys 16 p ..), straight from S's accumulators.
  template <int PAGES>
  static __device__ __forceinline__ void p_fragment(const float (&s)[2 * PAGES][4], int p,
                                                    unsigned (&pa)[4]) {
    pa[0] = pack2<T>(s[2 * p][0], s[2 * p][1]);
    pa[1] = pack2<T>(s[2 * p][2], s[2 * p][3]);
    pa[2] = pack2<T>(s[2 * p + 1][0], s[2 * p + 1][1]);
    pa[3] = pack2<T>(s[2 * p + 1][2], s[2 * p + 1][3]);
  }

  // O times the factors a deferred softmax left.
  __device__ __forceinline__ void rescale_o() {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        o[nt][2 * h] *= pending[h];
        o[nt][2 * h + 1] *= pending[h];
      }
  }

  // The keys base .. base + 16 PAGES - 1 from PAGES consecutive page buffers
  // at shared address buf: one softmax update (max, rescale of O) for all.
  template <int PAGES>
  __device__ __forceinline__ void step(unsigned buf, int base, float scale_log2) {
    const int lane = threadIdx.x & 31;

    // S: rows x 16 PAGES keys; s[nt2][2h + e] = (row g + 8h, key nt2 * 8 + 2qd + e).
    // Matrices of one ldmatrix: keys 0-7 and 8-15 of a page by dims 16st..
    // and 16st + 8...
    float s[2 * PAGES][4] = {};
#pragma unroll
    for (int p = 0; p < PAGES; ++p)
#pragma unroll
      for (int st = 0; st < KSTEPS; ++st) {
        unsigned kb[4];
        ldmatrix_x4<false>(kb, buf + p * Buffer::BYTES +
                                   Buffer::offset((lane >> 4) * 8 + (lane & 7),
                                                  2 * st + ((lane >> 3) & 1)));
        mma_16816<T>(s[2 * p], qa[st], kb[0], kb[1]);
        mma_16816<T>(s[2 * p + 1], qa[st], kb[2], kb[3]);
      }

    update<PAGES>(s, base, scale_log2);

    // O += P V: P is the A operand straight from S's accumulator layout.
    // Matrices of one ldmatrix.trans: keys 0-7 and 8-15 of a page by dims
    // 8nt.. and 8nt + 8...
#pragma unroll
    for (int p = 0; p < PAGES; ++p) {
      unsigned pa[4];
      p_fragment<PAGES>(s, p, pa);
      const unsigned v_tile = buf + p * Buffer::BYTES + Buffer::HALF_BYTES;
#pragma unroll
      for (int nt = 0; nt < NT; nt += 2) {
        unsigned vb[4];
        ldmatrix_x4<true>(vb, v_tile + Buffer::offset(((lane >> 3) & 1) * 8 + (lane & 7),
                                                      nt + (lane >> 4)));
        mma_16816<T>(o[nt], pa, vb[0], vb[1]);
        mma_16816<T>(o[nt + 1], pa, vb[2], vb[3]);
      }
    }
  }

  // The walk of the 4 warps of a warpgroup together over `stages` stages of
  // 64 keys (base0 + 64 i ..), their 64 rows on wgmma; stage i sits at
  // shared address stage_at(i) as SwizzledStage, and issue(i) starts its
  // copies (into buffer i % 3 of the block's ring). Every warp calls it. A
  // warp whose rows see none of a stage's keys gets P = 0; one without
  // tokens (past its sequence's end) computes on zeros and writes nothing.
  // Step i issues the scores of stage i and P V of stage i - 1, and runs the
  // softmax of stage i while P V runs (FlashAttention-3's overlap within a
  // warpgroup; O is rescaled only between its MMAs). Copies run one stage
  // ahead: stage i + 1 goes into the buffer stage i - 2 left.
  template <typename Issue, typename StageAt>
  __device__ __forceinline__ void walk_warpgroup(int stages, Issue&& issue, StageAt&& stage_at,
                                                 int base0, float scale_log2) {
    static_assert(HEAD_DIM % 64 == 0, "O = P V runs as m64n64 tiles");
    using MMA = Wgmma<T>;
    float s[8][4];
    unsigned pa[4][4];  // P of the last stage whose softmax ran
    auto softmax_to_p = [&](int i) { update<4, true>(s, base0 + 64 * i, scale_log2); };
    auto pack_p = [&] {
#pragma unroll
      for (int p = 0; p < 4; ++p) p_fragment<4>(s, p, pa[p]);
    };
    if (stages > 0) issue(0);
    cp_async_commit();
    if (stages > 1) issue(1);
    cp_async_commit();
    if (stages == 0) return;  // nothing issued (the groups are empty)
    cp_async_wait<1>();
    MMA::fence_shared_for_operands();
    __syncthreads();
    issue_scores(s, stage_at(0));
    MMA::template wait<0>();
    MMA::settle(s);
    softmax_to_p(0);
    pack_p();
    for (int i = 1; i < stages; ++i) {
      cp_async_wait<0>();
      MMA::fence_shared_for_operands();
      __syncthreads();
      if (i + 1 < stages) issue(i + 1);
      cp_async_commit();
      issue_scores(s, stage_at(i));
      rescale_o();
      issue_pv(pa, stage_at(i - 1));
      MMA::template wait<1>();
      MMA::settle(s);
      softmax_to_p(i);
      MMA::template wait<0>();
      MMA::settle(o);
      pack_p();
    }
    rescale_o();
    issue_pv(pa, stage_at(stages - 1));
    MMA::template wait<0>();
    MMA::settle(o);
    __syncthreads();  // the ring is free for the next kv head
  }

  // S = Q K^T of one stage into s, over k-steps of 16 dims (issued, not
  // waited for).
  __device__ __forceinline__ void issue_scores(float (&s)[8][4], unsigned stage) {
    using MMA = Wgmma<T>;
    using Stage = SwizzledStage<HEAD_DIM>;
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = 0.f;
    MMA::settle(s);
    MMA::fence();
#pragma unroll
    for (int st = 0; st < KSTEPS; ++st)
      MMA::template mma_64x64x16<false>(s, qa[st], Stage::descriptor(stage + Stage::k_step(st)));
    MMA::commit();
  }

  // O += P V of one stage: the k-step of page p (keys 16 p ..), n-tile h
  // (dims 64 h ..) (issued, not waited for).
  __device__ __forceinline__ void issue_pv(unsigned (&pa)[4][4], unsigned stage) {
    using MMA = Wgmma<T>;
    using Stage = SwizzledStage<HEAD_DIM>;
    MMA::settle(pa);
    MMA::settle(o);
    MMA::fence();
#pragma unroll
    for (int h = 0; h < HEAD_DIM / 64; ++h)
#pragma unroll
      for (int p = 0; p < 4; ++p)
        MMA::template mma_64x64x16<true>(&o[8 * h], pa[p],
                                         Stage::descriptor(stage + Stage::v_step(h, p)));
    MMA::commit();
  }

  __device__ __forceinline__ void finish() {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    }
  }

  // The walk of one warp alone over its pages (16-key pages klo / 16 +
  // warp0, + nwarps, ... <= khi / 16) through its own ring of
  // kPagedAttentionStages page buffers at ring.
  __device__ __forceinline__ void walk_own_pages(const T* k_cache, const T* v_cache,
                                                 const int* pages, int kvh, const Tile<TQ>& tile,
                                                 float scale_log2, int warp0, int nwarps,
                                                 void* ring) {
    constexpr int STAGES = kPagedAttentionStages;
    const int first = tile.klo / 16 + warp0, last = tile.khi / 16;
    const int count = tile.khi >= tile.klo && first <= last ? (last - first) / nwarps + 1 : 0;
    WalkPages<PAGE_SIZE> walk{pages, first, nwarps, count};
    const unsigned ring_base = static_cast<unsigned>(__cvta_generic_to_shared(ring));
    auto buffer = [&](int i) { return ring_base + static_cast<unsigned>(i % STAGES) * Buffer::BYTES; };
    run_pipeline<STAGES>(
        count,
        [&](int i) {
          copy_page<Buffer, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, 32>(
              buffer(i), buffer(i) + Buffer::HALF_BYTES, k_cache, v_cache, walk.at(i),
              (first + i * nwarps) * 16, kvh, tile.klo, tile.khi, threadIdx.x & 31);
        },
        [] { __syncwarp(); },
        [&](int i) { step<1>(buffer(i), (first + i * nwarps) * 16, scale_log2); });
    finish();
  }

  // The normalised output of rows [0, rows) (no other block holds a part of
  // them): row r is query head kvh * GROUP + r % GROUP of token t0 + r / GROUP.
  __device__ __forceinline__ void write(T* out, int q_stride, int t0, int kvh, int rows) const {
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2;
    const int qd = lane & 3;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = g + 8 * h;
      if (row >= rows) continue;
      const float inv = l[h] > 0.f ? 1.f / l[h] : 0.f;
      T* dst = out + static_cast<long long>(t0 + row / GROUP) * q_stride +
               (kvh * GROUP + row % GROUP) * HEAD_DIM + 2 * qd;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        *reinterpret_cast<unsigned*>(dst + 8 * nt) =
            pack2<T>(o[nt][2 * h] * inv, o[nt][2 * h + 1] * inv);
    }
  }

  // Rows [0, rows) of the warp's partials (the tile's real rows).
  __device__ __forceinline__ void store(Partials<ROWS, HEAD_DIM>& part, int rows) const {
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2;
    const int qd = lane & 3;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = g + 8 * h;
      if (row >= rows) continue;
      if (qd == 0) {
        part.m[row] = m[h];
        part.l[row] = l[h];
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        part.acc[row][8 * nt + 2 * qd] = o[nt][2 * h];
        part.acc[row][8 * nt + 2 * qd + 1] = o[nt][2 * h + 1];
      }
    }
  }
};
#endif  // LLMC_PAGED_ATTENTION_MMA

template <typename T, int NUM_HEADS, int NUM_KV_HEADS, int HEAD_DIM, int PAGE_SIZE>
constexpr bool use_mma() {
  return LLMC_PAGED_ATTENTION_MMA &&
         paged_attention_uses_mma(NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, sizeof(T));
}

// The keys [lo, hi] of the query token at position pos (empty: hi < lo).
__device__ __forceinline__ void token_keys(int pos, int kv_len, int sliding_window, int& lo,
                                           int& hi) {
  hi = min(pos, kv_len - 1);
  lo = sliding_window > 0 ? max(0, pos - sliding_window + 1) : 0;
}

// The key ranges of tokens t0 .. t0 + tokens - 1 (tokens <= 0: an empty tile).
template <int TQ>
__device__ __forceinline__ Tile<TQ> make_tile(int t0, int tokens, const int* positions, int kv_len,
                                              int sliding_window) {
  Tile<TQ> tile;
  tile.t0 = t0;
  tile.tokens = max(0, min(TQ, tokens));
  tile.klo = 0x7fffffff;
  tile.khi = -1;
#pragma unroll
  for (int i = 0; i < TQ; ++i) {
    if (i < tile.tokens) {
      token_keys(positions[t0 + i], kv_len, sliding_window, tile.lo[i], tile.hi[i]);
    } else {
      tile.lo[i] = 1;
      tile.hi[i] = 0;
    }
    if (tile.hi[i] >= tile.lo[i]) {
      tile.klo = min(tile.klo, tile.lo[i]);
      tile.khi = max(tile.khi, tile.hi[i]);
    }
  }
  if (tile.khi < 0) tile.klo = 0;  // no keys at all: an empty walk
  return tile;
}

}  // namespace paged_attention_detail

// grid = (tiles * C, ceil(NUM_KV_HEADS / HEADS)) with HEADS warps a block,
// clusters of (C, 1, 1) with C chosen at launch (no cluster: C = 1):
// cluster i serves tile (tiles - 1 - i), warp w of block row y kv head
// y * HEADS + w (prefill: see the top of the file).
template <int NUM_HEADS, int NUM_KV_HEADS, int HEAD_DIM, int PAGE_SIZE, typename T>
__global__ void __launch_bounds__(paged_attention_block_threads(NUM_KV_HEADS))
    paged_attention(const T* q, const T* k_cache, const T* v_cache, const int* positions,
                    const int* qo_indptr, const int* kv_indptr, const int* kv_page_indices,
                    const int* kv_last_page_len, T* out, float scale, int sliding_window,
                    int num_tokens, int num_seqs) {
  begin_after_previous_kernels();
  static_assert(NUM_HEADS % NUM_KV_HEADS == 0, "GQA needs NUM_HEADS % NUM_KV_HEADS == 0");
  constexpr int GROUP = NUM_HEADS / NUM_KV_HEADS;
  constexpr int TQ = paged_attention_tile_tokens(NUM_HEADS, NUM_KV_HEADS);
  constexpr int ROWS = paged_attention_tile_rows(NUM_HEADS, NUM_KV_HEADS);
  constexpr int HEADS = paged_attention_block_threads(NUM_KV_HEADS) / 32;
  constexpr int BLOCK = HEADS * 32;
  namespace pad = paged_attention_detail;
  using Part = pad::Partials<ROWS, HEAD_DIM>;
  constexpr int WARP_BYTES =
      paged_attention_warp_bytes(NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, sizeof(T));
  static_assert(HEADS * WARP_BYTES <= 227 * 1024,
                "paged_attention: the partials of a GQA group this large exceed shared memory");

  const unsigned csize = cluster_size();
  const unsigned rank = cluster_rank();
  // Items in reverse: a prefill's last tiles have the most keys, and the
  // blocks dispatched first should be the longest, not the tail.
  const int item = gridDim.x / csize - 1 - blockIdx.x / csize;
  const int warp = threadIdx.x / 32;

  // The tile (the same for every block of the cluster, so a spare tile's
  // cluster exits as a whole): tokens t0 .. t0 + n - 1 of sequence seq.
  const int seq = pad::find_item_seq(qo_indptr, num_seqs, item, TQ);
  const int t0 = qo_indptr[seq] + (item - pad::item_start(qo_indptr, seq, TQ)) * TQ;
  const int n = min(TQ, min(qo_indptr[seq + 1], num_tokens) - t0);
  if (n <= 0) return;
  const int kv_len = seq_kv_len(kv_indptr, kv_last_page_len, seq, PAGE_SIZE);
  const int* pages = kv_page_indices + kv_indptr[seq];
  const bool clustered = csize > 1;  // block `rank` walks pages rank, rank + C, ...

  // Each warp's ring (tensor-core walk) and then its partials; the runtime
  // launches with paged_attention_launch's shared_bytes, at least
  // HEADS * WARP_BYTES.
  extern __shared__ __align__(1024) unsigned char smem[];
  auto warp_part = [&](int w) -> Part& { return *reinterpret_cast<Part*>(smem + w * WARP_BYTES); };
  const float scale_log2 = scale * pad::kLog2e;
  constexpr int Q_STRIDE = NUM_HEADS * HEAD_DIM;
  // The tensor-core walk moves 16-byte chunks (and 4-byte Q and output pairs).
  const bool mma_aligned = is_aligned(q, 16) && is_aligned(k_cache, 16) &&
                           is_aligned(v_cache, 16) && is_aligned(out, 16);

#if LLMC_PAGED_ATTENTION_MMA
  // Prefill without a cluster (a sequence of more than one tile): the block
  // of every HEADS-th tile of the sequence serves that tile and the next
  // HEADS - 1 (the blocks of those exit), one warp a tile, under each of
  // its kv heads in turn. The warps read the K/V pages from one ring the
  // whole block fills, so each byte fetched serves HEADS tiles.
  if constexpr (HEADS > 1 && pad::use_mma<T, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE>()) {
    const int seq_start = qo_indptr[seq];
    const int seq_end = min(qo_indptr[seq + 1], num_tokens);
    if (!clustered && seq_end - seq_start > TQ && mma_aligned) {
      if ((t0 - seq_start) / TQ % HEADS != 0) return;
      using Walk = pad::MmaWalk<GROUP, TQ, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, T>;
      // The ring: STAGES buffers of PAGES pages (as many as fit, up to 4),
      // each taken by the warps in one softmax step.
      constexpr int STAGES = kPagedAttentionSharedStages;
      using Buffer = pad::PageBuffer<HEAD_DIM, T>;
      constexpr int FIT = HEADS * WARP_BYTES / (STAGES * static_cast<int>(Buffer::BYTES));
      constexpr int PAGES = FIT >= 4 ? 4 : FIT >= 2 ? 2 : 1;
      static_assert(FIT >= 1, "ring larger than the block's shared memory");
      constexpr unsigned STAGE_BYTES = PAGES * Buffer::BYTES;
      // On sm_90a a block of 4 warps is one warpgroup: its 64 rows take
      // each stage in wgmma tiles, the stage's 64 keys laid out as
      // SwizzledStage (the K rows, then the V rows). Otherwise each warp
      // steps on its own with mma.sync over the stage's page buffers.
      constexpr bool WARPGROUP = LLMC_PAGED_ATTENTION_WGMMA && HEADS == 4 && PAGES == 4 &&
                                 HEAD_DIM <= 128;
      const int wt0 = t0 + warp * TQ;
      const pad::Tile<TQ> wtile =
          pad::make_tile<TQ>(wt0, seq_end - wt0, positions, kv_len, sliding_window);
      // The block's key range: the union of its tokens' (each warp finds it).
      const int block_tokens = min(HEADS * TQ, seq_end - t0);
      int klo = 0x7fffffff, khi = -1;
      for (int i = threadIdx.x & 31; i < block_tokens; i += 32) {
        int lo, hi;
        pad::token_keys(positions[t0 + i], kv_len, sliding_window, lo, hi);
        if (hi >= lo) {
          klo = min(klo, lo);
          khi = max(khi, hi);
        }
      }
      klo = __reduce_min_sync(0xffffffffu, klo);
      khi = __reduce_max_sync(0xffffffffu, khi);
      const int first = klo / 16;
      pad::WalkPages<PAGE_SIZE> walk{pages, first, 1, khi >= klo ? khi / 16 - first + 1 : 0};
      const unsigned ring = static_cast<unsigned>(__cvta_generic_to_shared(smem));
      if (WARPGROUP && ring % 1024 != 0) __trap();  // the swizzle needs aligned stages
      auto buffer = [&](int i) { return ring + static_cast<unsigned>(i % STAGES) * STAGE_BYTES; };
      const int head_end = min(NUM_KV_HEADS, static_cast<int>(blockIdx.y + 1) * HEADS);
      for (int head = blockIdx.y * HEADS; head < head_end; ++head) {
        Walk w;
        w.begin(q, Q_STRIDE, head, wtile);
        // Stage i: pages i * PAGES .. of the walk; pages past its end are
        // zero-filled (read from nowhere) so the math sees only zeros.
        auto issue = [&](int i) {
#pragma unroll
          for (int p = 0; p < PAGES; ++p) {
            const int j = i * PAGES + p;
            const bool real = j < walk.count;
            const long long page = walk.at(j);
            const int lo = real ? klo : 1, hi = real ? khi : 0;
            if constexpr (WARPGROUP) {
              using Stage = SwizzledStage<HEAD_DIM>;
              static_assert(Stage::BYTES == STAGE_BYTES && STAGE_BYTES % 1024 == 0,
                            "a stage is the 4 pages' K and V rows, 1024-byte aligned");
              const unsigned k_rows = buffer(i) + Stage::page_rows(p);
              pad::copy_page<Stage, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, BLOCK>(
                  k_rows, k_rows + Stage::V_ROWS, k_cache, v_cache, page, (first + j) * 16, head,
                  lo, hi, threadIdx.x);
            } else {
              const unsigned page_buffer = buffer(i) + p * Buffer::BYTES;
              pad::copy_page<Buffer, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, BLOCK>(
                  page_buffer, page_buffer + Buffer::HALF_BYTES, k_cache, v_cache, page,
                  (first + j) * 16, head, lo, hi, threadIdx.x);
            }
          }
        };
        const int stages = (walk.count + PAGES - 1) / PAGES;
        if constexpr (WARPGROUP) {
          static_assert(STAGES == 3, "walk_warpgroup keeps stages i - 1 (P V), i (S) and i + 1 (copies) in the ring");
          w.walk_warpgroup(stages, issue, buffer, first * 16, scale_log2);
        } else {
          // Each warp skips the stages past its own keys (causal: the earlier tiles).
          auto consume = [&](int i) {
            const int base = (first + i * PAGES) * 16;
            if (wtile.tokens > 0 && base <= wtile.khi && base + 16 * PAGES - 1 >= wtile.klo)
              w.template step<PAGES>(buffer(i), base, scale_log2);
          };
          pad::run_pipeline<STAGES>(stages, issue, [] { __syncthreads(); }, consume);
        }
        if (wtile.tokens > 0) {
          w.finish();
          w.write(out, Q_STRIDE, wt0, head, wtile.tokens * GROUP);
        }
      }
      return;
    }
  }
#endif

  // Step 1: this warp's kv head over this block's pages; without a cluster
  // the warp holds whole rows and writes them.
  const pad::Tile<TQ> tile = pad::make_tile<TQ>(t0, n, positions, kv_len, sliding_window);
  const int rows = n * GROUP;
  const int kvh = blockIdx.y * HEADS + warp;
  if (kvh < NUM_KV_HEADS) {  // the last block row may have fewer heads
    bool done = false;
    if constexpr (pad::use_mma<T, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE>()) {
#if LLMC_PAGED_ATTENTION_MMA
      if (mma_aligned) {
        pad::MmaWalk<GROUP, TQ, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, T> w;
        w.begin(q, Q_STRIDE, kvh, tile);
        w.walk_own_pages(k_cache, v_cache, pages, kvh, tile, scale_log2, static_cast<int>(rank),
                         static_cast<int>(csize), smem + warp * WARP_BYTES);
        if (clustered) {
          w.store(warp_part(warp), rows);
        } else {
          w.write(out, Q_STRIDE, t0, kvh, rows);
        }
        done = true;
      }
#endif
    }
    if (!done) {
      constexpr int VW = pad::vector_width<T, HEAD_DIM>();
      const bool vec = VW > 1 && is_aligned(q, VW * sizeof(T)) &&
                       is_aligned(k_cache, VW * sizeof(T)) && is_aligned(v_cache, VW * sizeof(T));
      for (int i = 0; i < n; ++i) {
        const int keys = tile.hi[i] >= tile.lo[i] ? tile.hi[i] - tile.lo[i] + 1 : 0;
        const long long head0 = static_cast<long long>(t0 + i) * Q_STRIDE + kvh * GROUP * HEAD_DIM;
        auto walk = [&](auto& w) {
          w.run(q + head0, k_cache, v_cache, pages, kvh, tile.lo[i], keys, scale_log2,
                static_cast<int>(rank), static_cast<int>(csize));
          if (clustered) {
            w.store(warp_part(warp), i * GROUP);
          } else {
            w.write(out + head0);
          }
        };
        if (vec) {
          pad::SlotWalk<GROUP, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, VW, T> w;
          walk(w);
        } else {
          pad::SlotWalk<GROUP, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE, 1, T> w;
          walk(w);
        }
      }
    }
  }
  if (!clustered) return;

  // Step 2: block `rank` finalises its 1/C share of the block's heads x rows
  // x HEAD_DIM outputs from the partials of all ranks (read through
  // distributed shared memory). A thread takes VEC consecutive dims of one
  // row and loads every rank's m, l and accumulator slice before using any,
  // so the remote loads overlap: one round trip, not one a rank.
  cluster_sync();
  // The widest float vector that divides HEAD_DIM and keeps every row's
  // accumulator (after the 2 * ROWS floats of m and l) aligned to it.
  constexpr int VEC = vec_width<float, HEAD_DIM>() < vec_width<float, 2 * ROWS>()
                          ? vec_width<float, HEAD_DIM>()
                          : vec_width<float, 2 * ROWS>();
  constexpr int SLICES = HEAD_DIM / VEC;
  using Slice = Vec<float, VEC>;
  const int heads = min(HEADS, NUM_KV_HEADS - static_cast<int>(blockIdx.y) * HEADS);
  const int total = heads * rows * SLICES;
  const int per = (total + static_cast<int>(csize) - 1) / static_cast<int>(csize);
  for (int k = threadIdx.x; k < per; k += BLOCK) {
    const int i = static_cast<int>(rank) * per + k;
    if (i >= total) break;
    const int h = i / (rows * SLICES);
    const int r = i / SLICES % rows;
    const int d = i % SLICES * VEC;
    const Part& part = warp_part(h);
    float mb[kPagedAttentionMaxCluster], lb[kPagedAttentionMaxCluster];
    Slice ab[kPagedAttentionMaxCluster];
#pragma unroll
    for (int b = 0; b < kPagedAttentionMaxCluster; ++b) {
      if (b < static_cast<int>(csize)) {
        mb[b] = *map_rank(&part.m[r], b);
        lb[b] = *map_rank(&part.l[r], b);
        ab[b] = *map_rank(reinterpret_cast<const Slice*>(&part.acc[r][d]), b);
      }
    }
    float mx = neg_inf();
#pragma unroll
    for (int b = 0; b < kPagedAttentionMaxCluster; ++b)
      if (b < static_cast<int>(csize)) mx = fmaxf(mx, mb[b]);
    float o[VEC] = {}, den = 0.f;
#pragma unroll
    for (int b = 0; b < kPagedAttentionMaxCluster; ++b) {
      if (b < static_cast<int>(csize)) {
        const float wb = mb[b] == neg_inf() ? 0.f : exp2f(mb[b] - mx);
        den += wb * lb[b];
#pragma unroll
        for (int e = 0; e < VEC; ++e) o[e] += wb * ab[b].v[e];
      }
    }
    const long long t = t0 + r / GROUP;
    const int head = (static_cast<int>(blockIdx.y) * HEADS + h) * GROUP + r % GROUP;
#pragma unroll
    for (int e = 0; e < VEC; ++e)
      out[t * Q_STRIDE + head * HEAD_DIM + d + e] = from_float<T>(den > 0.f ? o[e] / den : 0.f);
  }
  // No block may exit (releasing its shared memory) while others read it.
  cluster_sync();
}

}  // namespace llmc_kernels

#endif  // __CUDACC__

// ---- launch geometry (host and device) ----
namespace llmc_kernels {

// x: one work item per tile, ceil((tokens + (TILE_TOKENS - 1) * seqs) /
// TILE_TOKENS) of them (enough for every sequence's tiles, see the top of
// the file); the runtime multiplies x by the cluster size it picks. y: one
// block per kPagedAttentionWarps kv heads.
constexpr LaunchShape paged_attention_launch(int num_heads, int num_kv_heads, int head_dim,
                                             int page_size) {
  const int tile_tokens = paged_attention_tile_tokens(num_heads, num_kv_heads);
  const int block_threads = paged_attention_block_threads(num_kv_heads);
  LaunchShape s;
  s.grid_x = SymExpr{1, tile_tokens - 1, 0, tile_tokens};
  s.grid_y = SymExpr{0, 0, num_kv_heads, block_threads / 32};
  s.block_threads = block_threads;
  s.shared_bytes = block_threads / 32 *
                   paged_attention_warp_bytes(num_heads, num_kv_heads, head_dim, page_size, 2);
  s.max_cluster = kPagedAttentionMaxCluster;
  return s;
}

}  // namespace llmc_kernels
