// The runtime's own kernel modules: model-agnostic (sampling, the decode
// GEMV), loaded with every plan's kernels by the CUDA backend, and
// precompiled into the plan by `llmc compile --arch` like the model's.
#pragma once

#include "runtime/jit/KernelCache.h"

#include <vector>

namespace llmc::jit {

/// Positions in runtimeModules().
enum RuntimeModule : size_t { kSampleRowsModule = 0, kGemvModule = 1, kNumRuntimeModules = 2 };

/// runtime/backend/cuda/sample_rows.cu after kernels/common.cuh, SampleShape.h
/// and runtime/sample/RowSampling.h (entry `sample_rows`), then runtime/backend/cuda/gemv.cu after
/// kernels/common.cuh and GemvShape.h (entry `gemv_rows`).
std::vector<ModuleSource> runtimeModules();

} // namespace llmc::jit
