// NVRTC compilation of one kernel module (no GPU or driver needed).
#pragma once

#include <string>
#include <vector>

namespace llmc::jit {

struct CompiledModule {
  std::vector<char> cubin;
  std::vector<std::string> lowered_names;  // one per requested entry, same order
  std::string log;
};

/// Compiles `source` for `arch` (e.g. "sm_90") with `options` plus the CUDA
/// include directory, resolving each entry name expression to its mangled
/// name. Throws std::runtime_error naming `module_name` with NVRTC's log.
CompiledModule compileModule(const std::string &module_name, const std::string &source,
                             const std::vector<std::string> &entries,
                             const std::vector<std::string> &options, const std::string &arch);

/// NVRTC's version as "major.minor" (part of JIT cache keys).
std::string nvrtcVersion();

} // namespace llmc::jit
