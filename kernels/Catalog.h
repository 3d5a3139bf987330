// The kernel catalog: which kernels/*.cuh templates exist, their integer
// template parameters, their launch geometry, and the NVRTC source of a
// specialisation. Plain C++ (no MLIR): the lowering uses the geometry, the
// plan emitter the sources.
#pragma once

#include "kernels/geometry.h"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llmc::kernels {

struct KernelTemplate {
  /// File kernels/<name>.cuh defining `llmc_kernels::<name>`.
  std::string_view name;
  /// Names of the integer template parameters, in order (the dtype follows).
  std::vector<std::string_view> params;
  /// Launch geometry of a specialisation (params in the order above).
  llmc_kernels::LaunchShape (*launch)(std::span<const int64_t> params);
};

/// The template called `name`, or nullptr.
const KernelTemplate *findTemplate(std::string_view name);

/// All templates, for tests and `llmc inspect`.
std::span<const KernelTemplate> allTemplates();

/// CUDA spelling of a dtype name ("bf16" -> "__nv_bfloat16", "f16" -> "__half",
/// "f32" -> "float"); throws std::invalid_argument for anything else.
std::string_view cudaTypeName(std::string_view dtype);

/// NVRTC name expression of a specialisation, e.g.
/// "llmc_kernels::rms_norm<4096, __nv_bfloat16>".
std::string nameExpression(const KernelTemplate &kernel, std::span<const int64_t> params,
                           std::string_view dtype);

/// Self-contained NVRTC source of a specialisation: CUDA headers, geometry,
/// common helpers and the template file. The entry is instantiated through
/// its name expression.
std::string moduleSource(const KernelTemplate &kernel);

/// Text of an embedded kernels/ file (e.g. "common.cuh"); throws if unknown.
std::string_view embeddedFile(std::string_view file);

} // namespace llmc::kernels
