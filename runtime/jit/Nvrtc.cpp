#include "runtime/jit/Nvrtc.h"

#include <nvrtc.h>

#include <memory>
#include <stdexcept>

namespace llmc::jit {
namespace {

void check(nvrtcResult result, const std::string &what, const std::string &module_name) {
  if (result != NVRTC_SUCCESS)
    throw std::runtime_error("kernel module '" + module_name + "': " + what + " failed: " +
                             nvrtcGetErrorString(result));
}

struct ProgramDeleter {
  void operator()(nvrtcProgram *program) const {
    nvrtcDestroyProgram(program);
    delete program;
  }
};

} // namespace

CompiledModule compileModule(const std::string &module_name, const std::string &source,
                             const std::vector<std::string> &entries,
                             const std::vector<std::string> &options, const std::string &arch) {
  std::unique_ptr<nvrtcProgram, ProgramDeleter> program(new nvrtcProgram{});
  check(nvrtcCreateProgram(program.get(), source.c_str(), (module_name + ".cu").c_str(), 0,
                           nullptr, nullptr),
        "nvrtcCreateProgram", module_name);
  for (const std::string &entry : entries)
    check(nvrtcAddNameExpression(*program, entry.c_str()), "nvrtcAddNameExpression", module_name);

  std::vector<std::string> allOptions = options;
  allOptions.push_back("--gpu-architecture=" + arch);
  allOptions.push_back(std::string("-I") + LLMC_CUDA_INCLUDE_DIR);
  std::vector<const char *> optionPointers;
  for (const std::string &option : allOptions)
    optionPointers.push_back(option.c_str());

  nvrtcResult compiled = nvrtcCompileProgram(*program, int(optionPointers.size()), optionPointers.data());
  CompiledModule module;
  size_t logSize = 0;
  check(nvrtcGetProgramLogSize(*program, &logSize), "nvrtcGetProgramLogSize", module_name);
  module.log.resize(logSize);
  check(nvrtcGetProgramLog(*program, module.log.data()), "nvrtcGetProgramLog", module_name);
  while (!module.log.empty() && (module.log.back() == '\0' || module.log.back() == '\n'))
    module.log.pop_back();
  if (compiled != NVRTC_SUCCESS)
    throw std::runtime_error("kernel module '" + module_name + "' does not compile for " + arch +
                             ":\n" + module.log);

  size_t cubinSize = 0;
  check(nvrtcGetCUBINSize(*program, &cubinSize), "nvrtcGetCUBINSize", module_name);
  module.cubin.resize(cubinSize);
  check(nvrtcGetCUBIN(*program, module.cubin.data()), "nvrtcGetCUBIN", module_name);
  for (const std::string &entry : entries) {
    const char *lowered = nullptr;
    check(nvrtcGetLoweredName(*program, entry.c_str(), &lowered), "nvrtcGetLoweredName", module_name);
    module.lowered_names.emplace_back(lowered);
  }
  return module;
}

std::string nvrtcVersion() {
  int major = 0, minor = 0;
  if (::nvrtcVersion(&major, &minor) != NVRTC_SUCCESS)
    return "unknown";
  return std::to_string(major) + "." + std::to_string(minor);
}

} // namespace llmc::jit
