// The kernel catalog: templates, their geometry and their embedded sources.

#include "kernels/Catalog.h"

// The host-side geometry sections of every kernel (the kernel sections are
// only compiled by NVRTC).
#include "kernels/geometry.h"
#include "kernels/common.cuh"
#include "kernels/add_rms_norm.cuh"
#include "kernels/embedding.cuh"
#include "kernels/gather_rows.cuh"
#include "kernels/paged_attention.cuh"
#include "kernels/rms_norm.cuh"
#include "kernels/rope_kv_write.cuh"
#include "kernels/silu_mul.cuh"

#include <array>
#include <stdexcept>
#include <utility>

namespace llmc::kernels {
namespace {

using llmc_kernels::LaunchShape;
using Params = std::span<const int64_t>;

const std::array kTemplates = {
    KernelTemplate{"embedding", {"HIDDEN"},
                   [](Params p) { return llmc_kernels::embedding_launch(int(p[0])); }},
    KernelTemplate{"rms_norm", {"HIDDEN"},
                   [](Params p) { return llmc_kernels::rms_norm_launch(int(p[0])); }},
    KernelTemplate{"add_rms_norm", {"HIDDEN"},
                   [](Params p) { return llmc_kernels::add_rms_norm_launch(int(p[0])); }},
    KernelTemplate{"rope_kv_write",
                   {"NUM_HEADS", "NUM_KV_HEADS", "HEAD_DIM", "ROTARY_DIM", "PAGE_SIZE"},
                   [](Params p) {
                     return llmc_kernels::rope_kv_write_launch(int(p[0]), int(p[1]), int(p[2]),
                                                               int(p[3]));
                   }},
    KernelTemplate{"paged_attention", {"NUM_HEADS", "NUM_KV_HEADS", "HEAD_DIM", "PAGE_SIZE"},
                   [](Params p) {
                     return llmc_kernels::paged_attention_launch(int(p[0]), int(p[1]), int(p[2]),
                                                                 int(p[3]));
                   }},
    KernelTemplate{"silu_mul", {"INTERMEDIATE"},
                   [](Params p) { return llmc_kernels::silu_mul_launch(int(p[0])); }},
    KernelTemplate{"gather_rows", {"HIDDEN"},
                   [](Params p) { return llmc_kernels::gather_rows_launch(int(p[0])); }},
};

const std::pair<std::string_view, std::string_view> kEmbeddedFiles[] = {
#include "embedded_kernels.inc"
};

} // namespace

const KernelTemplate *findTemplate(std::string_view name) {
  for (const KernelTemplate &kernel : kTemplates)
    if (kernel.name == name)
      return &kernel;
  return nullptr;
}

std::span<const KernelTemplate> allTemplates() { return kTemplates; }

std::string_view cudaTypeName(std::string_view dtype) {
  if (dtype == "bf16") return "__nv_bfloat16";
  if (dtype == "f16") return "__half";
  if (dtype == "f32") return "float";
  throw std::invalid_argument("no CUDA type for dtype '" + std::string(dtype) + "'");
}

std::string nameExpression(const KernelTemplate &kernel, std::span<const int64_t> params,
                           std::string_view dtype) {
  if (params.size() != kernel.params.size())
    throw std::invalid_argument("kernel " + std::string(kernel.name) + " takes " +
                                std::to_string(kernel.params.size()) + " parameters");
  std::string expression = "llmc_kernels::" + std::string(kernel.name) + "<";
  for (int64_t param : params)
    expression += std::to_string(param) + ", ";
  return expression + std::string(cudaTypeName(dtype)) + ">";
}

std::string_view embeddedFile(std::string_view file) {
  for (const auto &[name, text] : kEmbeddedFiles)
    if (name == file)
      return text;
  throw std::invalid_argument("no embedded kernel file '" + std::string(file) + "'");
}

std::string moduleSource(const KernelTemplate &kernel) {
  std::string source = "#include <cuda_fp16.h>\n#include <cuda_bf16.h>\n";
  for (std::string_view file : {std::string_view("geometry.h"), std::string_view("common.cuh")}) {
    source += "// ---- kernels/" + std::string(file) + "\n";
    source += embeddedFile(file);
  }
  std::string file = std::string(kernel.name) + ".cuh";
  source += "// ---- kernels/" + file + "\n";
  source += embeddedFile(file);
  return source;
}

} // namespace llmc::kernels
