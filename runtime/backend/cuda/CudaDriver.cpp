#include "runtime/backend/cuda/CudaDriver.h"

#include <dlfcn.h>

#include <mutex>
#include <stdexcept>

namespace llmc::runtime::cuda {
namespace {

// cuGetProcAddress resolves each name to the version matching the headers we
// compiled against (cuMemAlloc -> cuMemAlloc_v2 and so on).
Driver load() {
  void *library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!library)
    throw std::runtime_error(std::string("cannot load the CUDA driver (libcuda.so.1): ") + dlerror());
  using GetProcAddress = CUresult (*)(const char *, void **, int, cuuint64_t,
                                      CUdriverProcAddressQueryResult *);
  auto getProcAddress = reinterpret_cast<GetProcAddress>(dlsym(library, "cuGetProcAddress_v2"));
  if (!getProcAddress)
    throw std::runtime_error("the CUDA driver is too old: no cuGetProcAddress_v2");
  Driver driver;
  auto resolve = [&](const char *name, void **pointer) {
    CUdriverProcAddressQueryResult status;
    if (getProcAddress(name, pointer, CUDA_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, &status) !=
            CUDA_SUCCESS ||
        !*pointer)
      throw std::runtime_error(std::string("the CUDA driver lacks ") + name);
  };
#define LLMC_CUDA_RESOLVE(name) resolve(#name, reinterpret_cast<void **>(&driver.name));
  LLMC_CUDA_FUNCTIONS(LLMC_CUDA_RESOLVE)
#undef LLMC_CUDA_RESOLVE
  driver.check(driver.cuInit(0), "cuInit");
  return driver;
}

} // namespace

const Driver &Driver::get() {
  static const Driver driver = load();  // a failed load throws again on the next call
  return driver;
}

bool Driver::available() {
  try {
    int count = 0;
    return get().cuDeviceGetCount(&count) == CUDA_SUCCESS && count > 0;
  } catch (const std::exception &) {
    return false;
  }
}

void Driver::check(CUresult result, const char *what) const {
  if (result == CUDA_SUCCESS)
    return;
  const char *name = nullptr, *description = nullptr;
  if (cuGetErrorName)
    cuGetErrorName(result, &name);
  if (cuGetErrorString)
    cuGetErrorString(result, &description);
  throw std::runtime_error(std::string(what) + " failed: " + (name ? name : "CUDA error") + " (" +
                           (description ? description : std::to_string(int(result))) + ")");
}

} // namespace llmc::runtime::cuda
