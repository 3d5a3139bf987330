// The CUDA backend's own kernels (argmax) compile with
// NVRTC for sm_90 and resolve every entry; no GPU needed.

#include "runtime/backend/cuda/CudaBackend.h"
#include "runtime/jit/Nvrtc.h"

#include <gtest/gtest.h>

namespace {

TEST(RuntimeKernels, CompileForSm90) {
  const auto entries = llmc::runtime::CudaBackend::runtimeKernelEntries();
  llmc::jit::CompiledModule module = llmc::jit::compileModule(
      "llmc_runtime_kernels", llmc::runtime::CudaBackend::runtimeKernelSource(), entries,
      {"-std=c++17"}, "sm_90");
  EXPECT_GT(module.cubin.size(), 1000u);
  ASSERT_EQ(module.lowered_names.size(), entries.size());
  for (const std::string &name : module.lowered_names)
    EXPECT_FALSE(name.empty());
  EXPECT_EQ(module.log.find("warning"), std::string::npos) << module.log;
}

} // namespace
