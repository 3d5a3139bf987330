// The CUDA driver API, loaded with dlopen at run time: binaries link no
// libcuda and start on machines without a GPU or driver. Every call goes
// through check(), which turns an error into std::runtime_error naming the
// call.
#pragma once

#include <cuda.h>

#include <string>

namespace llmc::runtime::cuda {

struct Driver {
#define LLMC_CUDA_FUNCTIONS(X)                                                                     \
  X(cuInit) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetAttribute) X(cuDeviceGetName)          \
  X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease) X(cuCtxSetCurrent) X(cuStreamCreate)    \
  X(cuStreamDestroy) X(cuStreamSynchronize) X(cuMemAlloc) X(cuMemFree) X(cuMemHostAlloc)           \
  X(cuMemFreeHost) X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync) X(cuMemGetInfo)                       \
  X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction) X(cuLaunchKernel)                   \
  X(cuLaunchKernelEx) X(cuFuncSetAttribute) X(cuGetErrorName) X(cuGetErrorString)                  \
  X(cuEventCreate) X(cuEventRecord) X(cuEventSynchronize) X(cuEventElapsedTime)                    \
  X(cuEventDestroy) X(cuMemsetD32Async) X(cuStreamBeginCapture) X(cuStreamEndCapture)              \
  X(cuGraphInstantiateWithFlags) X(cuGraphLaunch) X(cuGraphExecDestroy) X(cuGraphDestroy)        \
  X(cuOccupancyMaxActiveClusters)
#define LLMC_CUDA_POINTER(name) decltype(&::name) name = nullptr;
  LLMC_CUDA_FUNCTIONS(LLMC_CUDA_POINTER)
#undef LLMC_CUDA_POINTER

  /// The process-wide driver; throws std::runtime_error when libcuda.so.1
  /// cannot be loaded or initialised.
  static const Driver &get();
  /// True when a driver loads and reports at least one device.
  static bool available();

  /// Throws std::runtime_error("what: CUDA_ERROR_... (description)") unless
  /// result is CUDA_SUCCESS.
  void check(CUresult result, const char *what) const;
};

} // namespace llmc::runtime::cuda
