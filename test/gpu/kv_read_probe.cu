// What read bandwidth the decode attention's access pattern can get at all:
// 134 MB (the K/V a layer of the 8B shape reads at batch 64, context 512)
// read as 16,384 pages of 8 KB in a scattered order, one warp walking every
// nwarps-th page, against the same bytes read sequentially (the runtime's
// read probe). `test/gpu/run.sh kvread` builds it with nvcc on the GPU
// machine. Each repeat reads a fresh 134 MB of a 4 GB buffer of random
// bytes, so the L2 holds none of it; times are medians of CUDA events.
#include <algorithm>
#include <type_traits>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda_check.h"

constexpr int kPageBytes = 8192;
constexpr int kPages = 16384;  // 134 MB
constexpr int kChunks = kPageBytes / 16 / 32;  // 16-byte loads a lane makes per page

__global__ void fill(uint4 *p, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u;
    h ^= h >> 13;
    p[i] = make_uint4(h, h * 3u, h * 5u, h * 7u);
  }
}

// The runtime's read probe over one region.
__global__ void sequential(const uint4 *data, size_t n, unsigned *out) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(data + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) out[0] = acc;
}

// Walk page w of warp `warp` is page (warp + w * nwarps) scattered by an odd
// multiplier (a permutation of the power-of-two page count).
__device__ __forceinline__ const uint4 *page_at(const uint4 *data, int warp, int nwarps, int w) {
  const unsigned page = (unsigned(warp + w * nwarps) * 2654435761u) % kPages;
  return data + size_t(page) * (kPageBytes / 16);
}

// The attention walk's copies: each warp copies its pages with cp.async
// into its own ring of STAGES page buffers in shared memory, STAGES - 1
// pages in flight, and reads a little of each page once it has landed;
// 4 warps a block. The attention kernel's walk is STAGES = 3 with two blocks
// a multiprocessor.
template <int STAGES>
__global__ void warp_pages_ring(const uint4 *data, unsigned *out) {
  extern __shared__ uint4 ring[];
  const int nwarps = gridDim.x * blockDim.x / 32;
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  uint4 *mine = ring + (threadIdx.x / 32) * STAGES * (kPageBytes / 16);
  const int count = (kPages - warp + nwarps - 1) / nwarps;
  auto issue = [&](int w) {
    if (w < count) {
      const uint4 *page = page_at(data, warp, nwarps, w);
      uint4 *buffer = mine + (w % STAGES) * (kPageBytes / 16);
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const unsigned dst = unsigned(__cvta_generic_to_shared(buffer + c * 32 + lane));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(page + c * 32 + lane) : "memory");
      }
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
  unsigned acc = 0;
  for (int w = 0; w < STAGES - 1; ++w) issue(w);
  for (int w = 0; w < count; ++w) {
    asm volatile("cp.async.wait_group %0;" ::"n"(STAGES - 2) : "memory");
    __syncwarp();
    issue(w + STAGES - 1);
    const uint4 v = mine[(w % STAGES) * (kPageBytes / 16) + lane];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
    __syncwarp();
  }
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  if (acc == 0x9e3779b9u) out[0] = acc;
}

int main() {
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t regionBytes = size_t(kPages) * kPageBytes, regions = 30;
  uint4 *data;
  unsigned *out;
  CK(cudaMalloc(&data, regionBytes * regions));
  CK(cudaMalloc(&out, 4));
  fill<<<4 * sms, 512>>>(data, regionBytes * regions / 16);
  CK(cudaGetLastError());
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  size_t next = 0;
  auto time = [&](const char *name, auto launch) {
    std::vector<float> ms;
    for (int r = 0; r < 11; ++r) {
      const uint4 *region = data + (next++ % regions) * (regionBytes / 16);
      CK(cudaEventRecord(a));
      launch(region);
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      CK(cudaGetLastError());
      float t;
      CK(cudaEventElapsedTime(&t, a, b));
      if (r > 0) ms.push_back(t);  // the first is a warm-up
    }
    std::sort(ms.begin(), ms.end());
    const float median = ms[ms.size() / 2];
    std::printf("| %s | %.1f | %.0f |\n", name, median * 1e3, regionBytes / (median * 1e-3) / 1e9);
  };
  std::printf("| 134 MB read as | us | GB/s |\n| --- | --- | --- |\n");
  time("sequential (the read probe)", [&](const uint4 *r) { sequential<<<8 * sms, 256>>>(r, regionBytes / 16, out); });
  // (stages, blocks of 4 warps a multiprocessor): pages in flight a
  // multiprocessor = 4 * blocks * (stages - 1).
  auto ring = [&](auto stages, int blocks) {
    constexpr int STAGES = decltype(stages)::value;
    const int bytes = 4 * STAGES * kPageBytes;
    CK(cudaFuncSetAttribute(warp_pages_ring<STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    char name[128];
    std::snprintf(name, sizeof name, "8 KB pages, %d warps an SM, ring of %d (%d pages in flight an SM)%s",
                  4 * blocks, STAGES, 4 * blocks * (STAGES - 1),
                  STAGES == 3 && blocks == 2 ? ": the attention walk" : "");
    time(name, [&](const uint4 *r) { warp_pages_ring<STAGES><<<blocks * sms, 128, bytes>>>(r, out); });
  };
  ring(std::integral_constant<int, 3>{}, 2);
  ring(std::integral_constant<int, 3>{}, 1);
  ring(std::integral_constant<int, 2>{}, 3);
  ring(std::integral_constant<int, 4>{}, 1);
  ring(std::integral_constant<int, 5>{}, 1);
  ring(std::integral_constant<int, 6>{}, 1);
  CK(cudaFree(data));
  CK(cudaFree(out));
}
