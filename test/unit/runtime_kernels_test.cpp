// The runtime's own kernel modules (sample_rows, gemv_rows) compile with NVRTC for
// sm_90a (what the CUDA backend compiles for on an H100/H200) and resolve their entries, without warnings; no GPU needed.

#include "runtime/jit/Nvrtc.h"
#include "runtime/jit/RuntimeModules.h"

#include <gtest/gtest.h>

namespace {

TEST(RuntimeKernels, CompileForSm90a) {
  const std::vector<llmc::jit::ModuleSource> modules = llmc::jit::runtimeModules();
  ASSERT_EQ(modules.size(), size_t(llmc::jit::kNumRuntimeModules));
  for (const llmc::jit::ModuleSource &source : modules) {
    llmc::jit::CompiledModule module =
        llmc::jit::compileModule(source.name, source.source, {source.entry}, source.options, "sm_90a");
    EXPECT_GT(module.cubin.size(), 1000u);
    ASSERT_EQ(module.lowered_names.size(), 1u);
    EXPECT_EQ(module.lowered_names[0], source.entry);  // extern "C"
    EXPECT_EQ(module.log.find("warning"), std::string::npos) << module.log;
  }
}

} // namespace
