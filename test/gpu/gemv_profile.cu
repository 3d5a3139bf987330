// The runtime's decode GEMV against cuBLAS on two batch-1 decode shapes
// (gate/up and o_proj of the 8B), three launches each, for Nsight Compute:
// `test/gpu/run.sh profile` builds it with nvcc on the GPU machine (the
// GEMV's source pasted after common.cuh and GemvShape.h, as NVRTC sees it)
// and runs it under ncu. The printed times are single launches, not a
// benchmark.
#include <cstdio>
#include <cstdlib>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cublas_v2.h>
#include "gemv_source.cuh"
#include "cuda_check.h"
#define CB(x) do { cublasStatus_t e = (x); if (e != CUBLAS_STATUS_SUCCESS) { printf("%s: %d\n", #x, int(e)); exit(1); } } while (0)
__global__ void fill(__nv_bfloat16 *p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995; h ^= h >> 15;
    p[i] = __float2bfloat16(float(int(h & 0xffff) - 32768) / 32768.f * 0.05f);
  }
}
int main() {
  int sms; CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cublasHandle_t h; CB(cublasCreate(&h));
  const int shapes[][2] = {{28672, 4096}, {4096, 4096}};
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  for (auto &s : shapes) {
    const int n = s[0], k = s[1], rows = 1;
    __nv_bfloat16 *w, *x, *o;
    CK(cudaMalloc(&w, size_t(n) * k * 2)); CK(cudaMalloc(&x, size_t(k) * 8 * 2)); CK(cudaMalloc(&o, size_t(n) * 8 * 2));
    fill<<<1024, 256>>>(w, size_t(n) * k, 1); fill<<<64, 256>>>(x, size_t(k) * 8, 2); CK(cudaGetLastError());
    const int grid = int(llmc::gemv::gridBlocks(n, sms));
    CK(cudaFuncSetAttribute(gemv_rows, cudaFuncAttributeMaxDynamicSharedMemorySize, llmc::gemv::kSharedBytes));
    float alpha = 1, beta = 0;
    for (int kind = 0; kind < 2; ++kind) {
      for (int rep = 0; rep < 3; ++rep) {
        CK(cudaEventRecord(a));
        if (kind == 0) {
          gemv_rows<<<grid, llmc::gemv::kThreads, llmc::gemv::kSharedBytes>>>((const uint4 *)x, (const uint4 *)w, nullptr, o, rows, n, k, 0);
        } else {
          CB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w, CUDA_R_16BF, k, x, CUDA_R_16BF, k,
                          &beta, o, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
        CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b)); CK(cudaGetLastError());
        float ms; CK(cudaEventElapsedTime(&ms, a, b));
        printf("%s %d x %d: %.1f us, %.0f GB/s\n", kind ? "cublas" : "gemv", n, k, ms * 1e3, double(n) * k * 2 / ms / 1e6);
      }
    }
    CK(cudaFree(w)); CK(cudaFree(x)); CK(cudaFree(o));
  }
}
