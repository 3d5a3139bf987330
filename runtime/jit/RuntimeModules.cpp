#include "runtime/jit/RuntimeModules.h"

#include <string_view>
#include <utility>

namespace llmc::jit {
namespace {

// The kernel and the header it includes, as files (name, text).
const std::pair<std::string_view, std::string_view> kRuntimeKernelFiles[] = {
#include "runtime_kernels.inc"
};

} // namespace

std::vector<ModuleSource> runtimeModules() {
  // NVRTC sees one source: the shared structs, then the kernel.
  std::string source;
  for (const auto &[name, text] : kRuntimeKernelFiles)
    source.append("// ").append(name).append("\n").append(text);
  return {{"llmc_sample_rows", source, "sample_rows", {"-std=c++17"}}};
}

} // namespace llmc::jit
