// gemv_rows: out[m, j] = sum_k in[m, k] * weight[j, k] (+ bias[j]) for the
// one to eight input rows of a decode step; bf16 or f16 inputs and weights,
// fp32 sums, the output in the input's type or in fp32. Compiled by NVRTC
// after kernels/common.cuh and GemvShape.h; needs sm_90 (bulk copies and
// transaction barriers), where the backend loads it.
//
// With so few rows a GEMM is a stream over the weights, and what matters is
// keeping enough bytes in flight from the first moment to the last. One
// warp of each block only copies: it asks the copy engine for the block's
// weights, chunk after chunk, into a ring of kStages chunks in shared memory
// (a bulk copy per row of a chunk, completing on the chunk's barrier), and
// refills a slot as soon as the other warps have freed it. So up to 132 KB
// a multiprocessor are in flight whatever the registers, and the copies
// never wait on the math. Weights never depend on the previous kernel, so
// the copy warp fills the ring before that kernel has finished; only the
// multiplying warps wait for it (they read the input rows).
//
// The sums go through the tensor cores (mma m16n8k16): a warp multiplies 16
// weight rows by the input rows as the 8 columns of the B operand, so there
// is no per-element conversion and no shuffle reduction. A dot product does
// not depend on the order of k, so each lane reads 8 consecutive k of its two
// weight rows and of its input row, and those registers serve as A and B
// fragments directly: lane (g = lane / 4, t = lane % 4) holds k = 8t .. 8t+7
// of a 32-k block for weight rows g and g + 8 and input row g, which the mma
// reads as the fragment's k = {2t, 2t+1, 2t+8, 2t+9} (first half) and the
// same again (second half), a consistent permutation of the block's 32 k.
//
// A block works on tiles of 16 weight rows, blockIdx.x, then every
// gridDim.x on; the grid is at most one block per multiprocessor, so blocks
// do not start and stop per tile, and the ring runs on from one tile into
// the next. The multiplying warps split each chunk's k: warp w takes its kUnroll
// 32-k blocks at w * kUnroll. They add their partial sums of a tile in
// shared memory in a fixed order, so results are deterministic.

using namespace llmc::gemv;

namespace {

// ---- the weight ring: transaction barriers and bulk copies (sm_90) --------------

__device__ __forceinline__ unsigned shared_address(const void *p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void barrier_init(unsigned long long *barrier, unsigned arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(barrier)), "r"(arrivals) : "memory");
}

// The copy warp's arrival: the phase completes once `bytes` more have landed.
__device__ __forceinline__ void barrier_expect_bytes(unsigned long long *barrier, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(barrier)), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void barrier_arrive(unsigned long long *barrier) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_address(barrier)) : "memory");
}

// Until the barrier's phase of this parity has completed.
__device__ __forceinline__ void barrier_wait(unsigned long long *barrier, unsigned parity) {
  asm volatile(
      "{\n\t.reg .pred done;\n"
      "retry:\n\t"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n\t"
      "@!done bra retry;\n\t}" ::"r"(shared_address(barrier)),
      "r"(parity)
      : "memory");
}

// `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to
// shared memory by the copy engine, counted on `barrier`. The weights are
// read once a step, so the L2 evicts them first: the step's activations and
// KV pages stay.
__device__ __forceinline__ void copy_bulk(void *destination, const void *source, unsigned bytes,
                                          unsigned long long *barrier, unsigned long long policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
          shared_address(destination)),
      "l"(source), "r"(bytes), "r"(shared_address(barrier)), "l"(policy)
      : "memory");
}

template <bool HALF>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                            unsigned b0, unsigned b1) {
  if constexpr (HALF) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// One weight row pair (g, g + 8) times input row g over 32 k: two mmas.
template <bool HALF>
__device__ __forceinline__ void mma_block(float (&c)[4], uint4 lo, uint4 hi, uint4 x) {
  mma_16x8x16<HALF>(c, lo.x, hi.x, lo.y, hi.y, x.x, x.y);
  mma_16x8x16<HALF>(c, lo.z, hi.z, lo.w, hi.w, x.z, x.w);
}

template <bool HALF>
__device__ __forceinline__ float widen(unsigned short bits) {
  if constexpr (HALF) {
    return __half2float(__ushort_as_half(bits));
  } else {
    return __uint_as_float(unsigned(bits) << 16);
  }
}

// The ring's slots, a barrier each that completes when a chunk has landed
// and one that completes when the multiplying warps have read it, and the
// warps' partial sums of a tile. At namespace scope so that both dtype
// instantiations share them.
extern __shared__ __align__(128) unsigned char ring[];
__shared__ unsigned long long chunk_landed[kStages], chunk_read[kStages];
__shared__ float partial[kWarps][4][32];
static_assert(sizeof(partial) + sizeof(chunk_landed) + sizeof(chunk_read) <= kStaticSharedBytes,
              "the launcher's shared memory check counts all of it");

// Barrier 1: the multiplying warps only (the copy warp has left).
__device__ __forceinline__ void sync_multiplying_warps() {
  asm volatile("bar.sync 1, %0;" ::"n"(kWarps * 32) : "memory");
}

// The copy warp's lane: every chunk of the block's tiles, in the order the
// multiplying warps read them, each into the slot they have last freed.
__device__ void copy_weights(const unsigned char *weight, int n, int k) {
  const long long row_bytes = 2LL * k;
  const int chunks = int(chunksOf(k)), tiles = int(tilesOf(n));
  unsigned long long policy;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  int chunk_index = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int rows = n - tile * kRowsPerBlock < kRowsPerBlock ? n - tile * kRowsPerBlock : kRowsPerBlock;
    const unsigned char *tile_weights = weight + (long long)tile * kRowsPerBlock * row_bytes;
    for (int chunk = 0; chunk < chunks; ++chunk, ++chunk_index) {
      const int slot = chunk_index % kStages;
      if (chunk_index >= kStages)
        barrier_wait(&chunk_read[slot], (chunk_index / kStages - 1) & 1);
      const long long offset = (long long)chunk * kChunkBytes;
      const unsigned bytes = unsigned(row_bytes - offset < kChunkBytes ? row_bytes - offset : kChunkBytes);
      barrier_expect_bytes(&chunk_landed[slot], rows * bytes);
      unsigned char *stage = ring + slot * kStageBytes;
      for (int r = 0; r < rows; ++r)
        copy_bulk(stage + r * kRowStrideBytes, tile_weights + r * row_bytes + offset, bytes, &chunk_landed[slot],
                  policy);
    }
  }
}

// Adds the multiplying warps' partial sums for tile `tile` (c[i] is weight
// row g + 8 * (i / 2), input row 2t + i % 2) and writes them with the bias.
template <bool HALF>
__device__ __forceinline__ void write_tile(const float (&c)[4], int tile, const unsigned short *bias, void *out,
                                           int rows, int n, bool float_output) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int i = 0; i < 4; ++i) partial[warp][i][lane] = c[i];
  sync_multiplying_warps();
  if (threadIdx.x < 4 * 32) {
    const int i = threadIdx.x / 32, l = threadIdx.x % 32;
    float sum = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += partial[w][i][l];
    const int j = tile * kRowsPerBlock + (l >> 2) + 8 * (i / 2), m = 2 * (l & 3) + i % 2;
    if (j < n && m < rows) {
      if (bias) sum += widen<HALF>(bias[j]);
      const long long at = (long long)m * n + j;
      if (float_output) {
        static_cast<float *>(out)[at] = sum;
      } else if constexpr (HALF) {
        static_cast<__half *>(out)[at] = __float2half_rn(sum);
      } else {
        static_cast<__nv_bfloat16 *>(out)[at] = __float2bfloat16_rn(sum);
      }
    }
  }
  sync_multiplying_warps();  // `partial` is reused by the next tile
}

// A multiplying warp: its 32-k blocks of every chunk as the chunks land.
// The input vectors of a chunk are loaded before waiting for its weights.
template <bool HALF>
__device__ void multiply_tiles(const uint4 *in, const unsigned short *bias, void *out, int rows, int n, int k,
                               bool float_output) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  constexpr int kChunkVectors = kChunkBytes / 16;
  const int vectors = k / 8;  // 16-byte vectors per row; offsets fit in int (takes() bounds n * k)
  const int chunks = int(chunksOf(k)), tiles = int(tilesOf(n));
  const bool x_valid = g < rows;
  const uint4 *x_row = in + g * vectors;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  // Lane (g, t)'s vector of 32-k block u of this warp, within a chunk.
  const int lane_vector = warp * kUnroll * 4 + t;

  llmc_kernels::begin_after_previous_kernels();
  int chunk_index = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    float c[4] = {0, 0, 0, 0};
    for (int chunk = 0; chunk < chunks; ++chunk, ++chunk_index) {
      const int first = chunk * kChunkVectors + lane_vector;
      uint4 x[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int v = first + 4 * u;
        x[u] = x_valid && v < vectors ? x_row[v] : zero;
      }
      const int slot = chunk_index % kStages;
      barrier_wait(&chunk_landed[slot], (chunk_index / kStages) & 1);
      // Rows past n and vectors past k hold stale bytes: rows past n only
      // reach outputs that are not written, vectors past k are read as zeros.
      const uint4 *lo = reinterpret_cast<const uint4 *>(ring + slot * kStageBytes + g * kRowStrideBytes);
      const uint4 *hi = lo + 8 * kRowStrideBytes / 16;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const bool inside = first + 4 * u < vectors;
        const int at = lane_vector + 4 * u;
        mma_block<HALF>(c, inside ? lo[at] : zero, inside ? hi[at] : zero, x[u]);
      }
      __syncwarp();
      if (lane == 0) barrier_arrive(&chunk_read[slot]);
    }
    write_tile<HALF>(c, tile, bias, out, rows, n, float_output);
  }
}

} // namespace

// gridBlocks(n, multiprocessors) blocks of kThreads with kSharedBytes of
// dynamic shared memory; the launcher checks takes(rows, n, k, aligned).
extern "C" __global__ void __launch_bounds__(kThreads, kBlocksPerMultiprocessor)
gemv_rows(const uint4 *in, const uint4 *weight, const unsigned short *bias, void *out, int rows, int n, int k,
          int flags) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      barrier_init(&chunk_landed[s], 1);
      barrier_init(&chunk_read[s], kWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x / 32 == kWarps) {
    if (threadIdx.x % 32 == 0) copy_weights(reinterpret_cast<const unsigned char *>(weight), n, k);
    return;
  }
  if (flags & kHalfInputs) {
    multiply_tiles<true>(in, bias, out, rows, n, k, flags & kFloatOutput);
  } else {
    multiply_tiles<false>(in, bias, out, rows, n, k, flags & kFloatOutput);
  }
#else
  __trap();  // the backend loads the GEMV only on sm_90
#endif
}
