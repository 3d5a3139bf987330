// gemv_rows: out[m, j] = sum_k in[m, k] * weight[j, k] (+ bias[j]) for the
// one to eight input rows of a decode step; bf16 or f16 inputs and weights,
// fp32 sums, the output in the input's type or in fp32. Compiled by NVRTC
// after kernels/common.cuh and GemvShape.h.
//
// With so few rows a GEMM is a stream over the weights, and what matters is
// keeping enough 16-byte weight loads in flight. The sums still go through
// the tensor cores (mma m16n8k16): a warp multiplies 16 weight rows by the
// input rows as the 8 columns of the B operand, so there is no per-element
// conversion and no shuffle reduction. A dot product does not depend on the
// order of k, so each lane loads 8 consecutive k of its two weight rows and
// of its input row, and those registers serve as A and B fragments directly:
// lane (g = lane / 4, t = lane % 4) holds k = 8t .. 8t+7 of a 32-k block for
// weight rows g and g + 8 and input row g, which the mma reads as the
// fragment's k = {2t, 2t+1, 2t+8, 2t+9} (first half) and the same again
// (second half), a consistent permutation of the block's 32 k.
//
// A block works on tiles of 16 weight rows; its warps split k: warp w takes
// kUnroll consecutive 32-k blocks (256 contiguous bytes of each of the 16
// rows) at w * kUnroll, then every kWarps * kUnroll blocks on. They add
// their partial sums in shared memory in a fixed order, so results are
// deterministic. The grid is at most one block per multiprocessor, so blocks
// do not start and stop per tile, and the next GEMV's blocks fit beside them. The first weights are loaded before waiting for
// the previous kernel (they never depend on it), so the stream starts while
// that kernel finishes.

using namespace llmc::gemv;

namespace {

// A 16-byte weight load that bypasses L1 (weights are read once; L1 is
// better left to the input rows, which every warp reads) and has the L2
// fetch the whole 256-byte piece around it from memory: a warp's kUnroll
// loads of a row are exactly such a piece.
__device__ __forceinline__ uint4 load_streaming(const uint4 *p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
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

// The warps' partial sums of a tile; at namespace scope so that both dtype
// instantiations share one buffer.
__shared__ float partial[kWarps][4][32];

// Adds the block's warps' partial sums for tile `tile` (c[i] is weight row
// g + 8 * (i / 2), input row 2t + i % 2) and writes them with the bias.
template <bool HALF>
__device__ __forceinline__ void write_tile(const float (&c)[4], int tile, const unsigned short *bias, void *out,
                                           int rows, int n, bool float_output) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int i = 0; i < 4; ++i) partial[warp][i][lane] = c[i];
  __syncthreads();
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
  __syncthreads();  // `partial` is reused by the next tile
}

// Tiles of 16 weight rows, blockIdx.x, then every gridDim.x on. Before a
// tile's sums are added up, its warps already load the next tile's first
// weights, so the stream does not pause between tiles.
template <bool HALF>
__device__ void gemv_tiles(const uint4 *in, const uint4 *weight, const unsigned short *bias, void *out, int rows,
                           int n, int k, bool float_output) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int vectors = k / 8;             // 16-byte vectors per row
  const int blocks = (vectors + 3) / 4;  // 32-k blocks per row
  const int tiles = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  const bool x_valid = g < rows;
  const uint4 *x_row = in + g * vectors;
  const uint4 zero = make_uint4(0, 0, 0, 0);

  // Offsets in vectors fit in int (takes() bounds n * k).
  uint4 lo[kUnroll], hi[kUnroll];
  auto load_weights = [&](int tile, int first) {
    const int row = tile * kRowsPerBlock + g;
    const uint4 *w_lo = weight + row * vectors;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int v = (first + u) * 4 + t;
      lo[u] = row < n && v < vectors ? load_streaming(w_lo + v) : zero;
      hi[u] = row + 8 < n && v < vectors ? load_streaming(w_lo + 8 * vectors + v) : zero;
    }
  };
  constexpr int kStride = kWarps * kUnroll;
  load_weights(blockIdx.x, warp * kUnroll);
  llmc_kernels::begin_after_previous_kernels();

  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    float c[4] = {0, 0, 0, 0};
    for (int first = warp * kUnroll; first < blocks; first += kStride) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int v = (first + u) * 4 + t;
        mma_block<HALF>(c, lo[u], hi[u], x_valid && v < vectors ? x_row[v] : zero);
      }
      // The next blocks of this tile, or the next tile's first ones.
      int next_tile = tile, next_first = first + kStride;
      if (next_first >= blocks) next_tile += gridDim.x, next_first = warp * kUnroll;
      if (next_tile < tiles) load_weights(next_tile, next_first);
    }
    write_tile<HALF>(c, tile, bias, out, rows, n, float_output);
  }
}

} // namespace

// gridBlocks(n, multiprocessors) blocks of kThreads; the launcher checks
// takes(rows, n, k, aligned).
extern "C" __global__ void __launch_bounds__(kThreads, kBlocksPerMultiprocessor)
gemv_rows(const uint4 *in, const uint4 *weight, const unsigned short *bias, void *out, int rows, int n, int k,
          int flags) {
  if (flags & kHalfInputs) {
    gemv_tiles<true>(in, weight, bias, out, rows, n, k, flags & kFloatOutput);
  } else {
    gemv_tiles<false>(in, weight, bias, out, rows, n, k, flags & kFloatOutput);
  }
}
