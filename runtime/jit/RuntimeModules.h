// The runtime's own kernel modules: model-agnostic (sampling), loaded with
// every plan's kernels by the CUDA backend, and precompiled into the plan by
// `llmc compile --arch` like the model's.
#pragma once

#include "runtime/jit/KernelCache.h"

#include <vector>

namespace llmc::jit {

/// runtime/backend/cuda/sample_rows.cu after runtime/sample/RowSampling.h,
/// entry `sample_rows`.
std::vector<ModuleSource> runtimeModules();

} // namespace llmc::jit
