// Error checks for the standalone CUDA probes in test/gpu (built with nvcc
// on the GPU machine by run.sh): a failed call prints itself and exits.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CK(x)                                                          \
  do {                                                                 \
    cudaError_t e = (x);                                               \
    if (e != cudaSuccess) {                                            \
      std::printf("%s: %s\n", #x, cudaGetErrorString(e));             \
      std::exit(1);                                                    \
    }                                                                  \
  } while (0)
