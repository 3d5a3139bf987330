// Device helpers shared by all llmc kernels.
//
// The compiler pastes this file's text into every NVRTC source, after
// <cuda_fp16.h>, <cuda_bf16.h> and geometry.h and before the op's own file;
// op files therefore use these helpers without #including anything (the
// runtime's GEMV module pastes it too, without geometry.h). The host
// compiler needs nothing from here, so everything is device-only.
#pragma once

#ifdef __CUDACC__

namespace llmc_kernels {

// ---- programmatic dependent launch (sm_90) -----------------------------------

// The CUDA backend launches kernels as programmatic dependents of the kernel
// before them on the stream, so a kernel's blocks may start while that kernel
// is still finishing. Every kernel calls this before it reads or writes any
// memory that earlier kernels use: it waits until they have completed and
// their writes are visible, and lets the next kernel start early in turn.
// Without such a launch (or before sm_90) it does nothing.
//
// kAfterWait lets the next kernel start once this one has passed its wait,
// so at most one kernel waits ahead of the running one. kAtOnce lets it start
// right away: the small kernels whose output is a GEMM's input use it, so
// the GEMV after them takes each multiprocessor the GEMV before them leaves
// and starts copying its weights (which depend on nothing) during that one's
// tail. The next kernel's own wait still orders its reads after this
// kernel's writes.
// (Attention launched that early, after rope_kv_write, made the step slower.)
enum class NextKernel { kAfterWait, kAtOnce };

__device__ __forceinline__ void begin_after_previous_kernels(NextKernel next = NextKernel::kAfterWait) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (next == NextKernel::kAtOnce) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (next == NextKernel::kAfterWait) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// ---- thread-block clusters (sm_90) ----------------------------------------------

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define LLMC_CLUSTERS 1
#else
#define LLMC_CLUSTERS 0
#endif

// Blocks in this block's cluster (1 when launched without clusters) and this
// block's rank in it.
__device__ __forceinline__ unsigned cluster_size() {
#if LLMC_CLUSTERS
  unsigned n;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(n));
  return n;
#else
  return 1;
#endif
}

__device__ __forceinline__ unsigned cluster_rank() {
#if LLMC_CLUSTERS
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
#else
  return 0;
#endif
}

// All threads of all blocks of the cluster; release/acquire orders shared
// memory (local and distributed) around it. Only called with clusters > 1.
__device__ __forceinline__ void cluster_sync() {
#if LLMC_CLUSTERS
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n\t"
      "barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

// Generic address of the variable at p (in this block's shared memory) in the
// shared memory of block `rank` of the cluster.
template <typename P>
__device__ __forceinline__ const P* map_rank(const P* p, unsigned rank) {
#if LLMC_CLUSTERS
  unsigned long long r;
  asm volatile("mapa.u64 %0, %1, %2;" : "=l"(r) : "l"(p), "r"(rank));
  return reinterpret_cast<const P*>(r);
#else
  (void)rank;
  return p;
#endif
}

// ---- dtype conversion (all arithmetic is fp32) ------------------------------

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// Round-to-nearest-even, as PyTorch's casts do.
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// x rounded to T and widened back: emulates a PyTorch op whose result is
// materialised in the model dtype before the next op reads it.
template <typename T>
__device__ __forceinline__ float round_to(float x) { return to_float(from_float<T>(x)); }

// -inf without <math.h>'s INFINITY (NVRTC does not define it).
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// ---- vectorised row access ---------------------------------------------------

// N elements moved as one access of sizeof(T) * N bytes (at most 16).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Widest power-of-two element count of at most 16 bytes that divides LEN, so
// that rows of LEN elements keep a vector-aligned start from one row to the next.
template <typename T, int LEN>
__host__ __device__ constexpr int vec_width() {
  int w = 16 / static_cast<int>(sizeof(T));
  while (w > 1 && LEN % w != 0) w /= 2;
  return w;
}

// Pointers come from the runtime (possibly offsets into larger buffers), so
// kernels check alignment once per block and fall back to scalar access.
__device__ __forceinline__ bool is_aligned(const void* p, unsigned bytes) {
  return (reinterpret_cast<unsigned long long>(p) & (bytes - 1)) == 0;
}

// Chunk c of W elements starting at p (p must be W * sizeof(T) aligned).
template <int W, typename T>
__device__ __forceinline__ Vec<T, W> load_vec(const T* p, int c) {
  return *reinterpret_cast<const Vec<T, W>*>(p + static_cast<long long>(c) * W);
}
template <int W, typename T>
__device__ __forceinline__ void store_vec(T* p, int c, const Vec<T, W>& v) {
  *reinterpret_cast<Vec<T, W>*>(p + static_cast<long long>(c) * W) = v;
}

// dst[0..LEN) = src[0..LEN) with the threads of one block of BLOCK threads.
template <int LEN, int BLOCK, int W, typename T>
__device__ __forceinline__ void copy_row_w(const T* src, T* dst) {
  for (int c = threadIdx.x; c < LEN / W; c += BLOCK) store_vec<W>(dst, c, load_vec<W>(src, c));
}
template <int LEN, int BLOCK, typename T>
__device__ __forceinline__ void copy_row(const T* src, T* dst) {
  constexpr int W = vec_width<T, LEN>();
  if (is_aligned(src, W * sizeof(T)) && is_aligned(dst, W * sizeof(T))) {
    copy_row_w<LEN, BLOCK, W>(src, dst);
  } else {
    copy_row_w<LEN, BLOCK, 1>(src, dst);
  }
}

// ---- reductions ----------------------------------------------------------------

// Butterfly reductions: every lane of a full warp ends with the result.
__device__ __forceinline__ float warp_reduce_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_reduce_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduction over a whole block of BLOCK threads; every thread gets the same
// result (the warp partials are combined in one fixed order, so it is also
// deterministic). All threads of the block must call it (it synchronises).
// BLOCK must be whole warps: the full-mask shuffles need all 32 lanes present,
// so every geometry in llmc_kernels rounds its block size up to a multiple of 32.
template <int BLOCK, typename Op>
__device__ __forceinline__ float block_reduce(float v, Op op) {
  static_assert(BLOCK % 32 == 0 && BLOCK >= 32 && BLOCK <= 1024,
                "block reductions need 1..32 full warps");
  constexpr int WARPS = BLOCK / 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if constexpr (WARPS == 1) {
    return v;
  } else {
    __shared__ float partial[WARPS];
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = partial[0];
#pragma unroll
    for (int w = 1; w < WARPS; ++w) r = op(r, partial[w]);
    __syncthreads();  // lets a later call reuse `partial` safely
    return r;
  }
}
template <int BLOCK>
__device__ __forceinline__ float block_reduce_sum(float v) { return block_reduce<BLOCK>(v, SumOp{}); }
template <int BLOCK>
__device__ __forceinline__ float block_reduce_max(float v) { return block_reduce<BLOCK>(v, MaxOp{}); }

// ---- batch layout ----------------------------------------------------------------

// The largest s in [0, n) with key(s) <= target, for a key that does not
// decrease with s and has key(0) <= target. A whole warp searches together:
// each round probes 32 evenly spaced candidates with one load each, so 1,024
// sequences take two rounds of loads instead of ten dependent ones. Every
// lane of the warp must call it; all get the result.
template <typename Key>
__device__ __forceinline__ int warp_search_last_le(int n, int target, Key key) {
  const int lane = threadIdx.x & 31;
  int lo = 0, hi = n - 1;  // key(lo) <= target; the answer is in [lo, hi]
  while (lo < hi) {
    const int step = (hi - lo + 32) / 32;
    const int probe = lo + lane * step;
    const unsigned ok = __ballot_sync(0xffffffffu, probe <= hi && key(probe) <= target);
    lo += (31 - __clz(ok)) * step;  // lane 0 probes lo, so ok != 0
    hi = min(hi, lo + step - 1);
  }
  return lo;
}

// Sequence s whose query rows [indptr[s], indptr[s+1]) contain row t, i.e. the
// largest s in [0, num_seqs) with indptr[s] <= t. Taking the largest skips
// sequences with no rows in this forward (indptr[s] == indptr[s+1]). Called
// by whole warps (see warp_search_last_le).
__device__ __forceinline__ int find_seq(const int* indptr, int num_seqs, int t) {
  return warp_search_last_le(num_seqs, t, [&](int s) { return indptr[s]; });
}

// Number of KV positions sequence s holds in the paged cache.
__device__ __forceinline__ int seq_kv_len(const int* kv_indptr, const int* kv_last_page_len,
                                          int s, int page_size) {
  const int pages = kv_indptr[s + 1] - kv_indptr[s];
  return pages > 0 ? (pages - 1) * page_size + kv_last_page_len[s] : 0;
}

// Element offset of (KV position p, kv head, dim 0) of sequence s in a paged
// cache laid out [num_pages][PAGE_SIZE][NUM_KV_HEADS][HEAD_DIM]. 64-bit because
// a whole cache easily exceeds 2^31 elements.
template <int PAGE_SIZE, int NUM_KV_HEADS, int HEAD_DIM>
__device__ __forceinline__ long long kv_offset(const int* kv_indptr, const int* kv_page_indices,
                                               int s, int p, int kv_head) {
  const long long page = kv_page_indices[kv_indptr[s] + p / PAGE_SIZE];
  return ((page * PAGE_SIZE + p % PAGE_SIZE) * NUM_KV_HEADS + kv_head) * HEAD_DIM;
}

}  // namespace llmc_kernels

#endif  // __CUDACC__
