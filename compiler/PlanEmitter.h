// exec module -> plan.llmp bytes.
#pragma once

#include "runtime/jit/KernelCache.h"

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace llmc {

/// A kernel module's NVRTC input (the runtime's own modules come in the same
/// form), and what ahead-of-time compilation of it for one architecture
/// produced.
using KernelSource = jit::ModuleSource;
struct PrecompiledKernel {
  std::string arch, lowered_name;
  std::vector<char> cubin;
};

struct EmitOptions {
  int64_t max_tokens_per_forward;
  int64_t max_seqs_per_forward;
  /// When set, called once with every kernel module (the model's, then
  /// runtime_modules); returns each module's binaries to store in the plan
  /// (llmc compile --arch).
  std::function<std::vector<std::vector<PrecompiledKernel>>(const std::vector<KernelSource> &)> precompile;
  /// The runtime's own modules (sampling), stored with their binaries when
  /// precompiling, so that loading the plan compiles nothing.
  std::vector<KernelSource> runtime_modules;
};

/// Serialises a module that went through the compile pipeline (exec kernels,
/// a memory-planned @forward, the llm.model dictionary). Fails with a
/// diagnostic on the module when something cannot be represented.
mlir::FailureOr<std::vector<uint8_t>> emitPlan(mlir::ModuleOp module, const EmitOptions &options);

} // namespace llmc
