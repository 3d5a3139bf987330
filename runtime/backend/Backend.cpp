#include "runtime/backend/Backend.h"

#include "runtime/backend/cpu/CpuBackend.h"
#ifdef LLMC_HAVE_CUDA
#include "runtime/backend/cuda/CudaBackend.h"
#endif

#include <stdexcept>

namespace llmc::runtime {

std::unique_ptr<Backend> createBackend(std::string_view name) {
#ifdef LLMC_HAVE_CUDA
  if (name == "cuda" || (name == "auto" && cuda::Driver::available()))
    return std::make_unique<CudaBackend>();
#else
  if (name == "cuda")
    throw std::invalid_argument("this build has no CUDA backend (built without the CUDA toolkit)");
#endif
  if (name == "cpu" || name == "auto")
    return std::make_unique<CpuBackend>();
  throw std::invalid_argument("unknown backend '" + std::string(name) + "' (expected cpu, cuda or auto)");
}

} // namespace llmc::runtime
