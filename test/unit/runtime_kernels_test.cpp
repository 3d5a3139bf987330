// The CUDA backend's own kernel module (sample_rows) compiles with NVRTC for
// sm_90 and resolves its entry, without warnings; no GPU needed.

#include "runtime/backend/cuda/CudaBackend.h"
#include "runtime/jit/Nvrtc.h"

#include <gtest/gtest.h>

namespace {

TEST(RuntimeKernels, CompileForSm90) {
  const llmc::jit::ModuleSource source = llmc::runtime::CudaBackend::runtimeModule();
  llmc::jit::CompiledModule module =
      llmc::jit::compileModule(source.name, source.source, {source.entry}, source.options, "sm_90");
  EXPECT_GT(module.cubin.size(), 1000u);
  ASSERT_EQ(module.lowered_names.size(), 1u);
  EXPECT_EQ(module.lowered_names[0], "sample_rows");  // extern "C"
  EXPECT_EQ(module.log.find("warning"), std::string::npos) << module.log;
}

} // namespace
