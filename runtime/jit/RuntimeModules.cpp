#include "runtime/jit/RuntimeModules.h"

#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace llmc::jit {
namespace {

// The kernels and the headers they include, as files (name, text).
const std::pair<std::string_view, std::string_view> kRuntimeKernelFiles[] = {
#include "runtime_kernels.inc"
};

// One NVRTC source: the named files in order, each under a comment naming it.
std::string concatenate(std::initializer_list<std::string_view> files) {
  std::string source;
  for (std::string_view file : files) {
    bool found = false;
    for (const auto &[name, text] : kRuntimeKernelFiles)
      if (name == file) {
        source.append("// ").append(name).append("\n").append(text);
        found = true;
      }
    if (!found)
      throw std::logic_error("runtime kernel file " + std::string(file) + " is not embedded");
  }
  return source;
}

} // namespace

std::vector<ModuleSource> runtimeModules() {
  std::vector<ModuleSource> modules(kNumRuntimeModules);
  modules[kSampleRowsModule] = {"llmc_sample_rows",
                                "#include <cuda_fp16.h>\n#include <cuda_bf16.h>\n" +
                                    concatenate({"common.cuh", "SampleShape.h", "RowSampling.h", "sample_rows.cu"}),
                                "sample_rows", {"-std=c++17", "-default-device"}};  // SampleShape.h is plain C++
  modules[kGemvModule] = {"llmc_gemv",
                          "#include <cuda_fp16.h>\n#include <cuda_bf16.h>\n" +
                              concatenate({"common.cuh", "GemvShape.h", "gemv.cu"}),
                          "gemv_rows", {"-std=c++17", "-default-device"}};  // GemvShape.h is plain C++
  return modules;
}

} // namespace llmc::jit
