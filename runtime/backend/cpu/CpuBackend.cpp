#include "runtime/backend/cpu/CpuBackend.h"

#include "runtime/backend/cpu/CpuOps.h"
#include "runtime/sample/Sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <vector>

namespace llmc::runtime {
namespace {

cpu::ElementType elementType(plan::DType dtype) {
  switch (dtype) {
  case plan::DType::f32: return cpu::ElementType::f32;
  case plan::DType::f16: return cpu::ElementType::f16;
  case plan::DType::bf16: return cpu::ElementType::bf16;
  case plan::DType::i32: break;
  }
  throw std::invalid_argument("the CPU backend has no float kernels for dtype i32");
}

// Scalars of a launch in order, with T and S substituted.
struct Scalars {
  std::span<const plan::Scalar> values;
  const BatchShape &batch;

  float f(size_t i) const { return values[i].f(); }
  int i(size_t index) const {
    const plan::Scalar &s = values[index];
    switch (s.kind()) {
    case plan::ScalarKind::num_tokens: return int(batch.num_tokens);
    case plan::ScalarKind::num_seqs: return int(batch.num_seqs);
    default: return s.i();
    }
  }
};

const int32_t *ints(void *const p) { return static_cast<const int32_t *>(p); }

} // namespace

void *CpuBackend::allocate(size_t bytes) {
  void *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!p)
    throw std::runtime_error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  return p;
}

void CpuBackend::release(void *pointer) { std::free(pointer); }

// Zero bytes may come with a null pointer (an empty vector's data()).
void CpuBackend::upload(void *device, const void *host, size_t bytes) {
  if (bytes > 0)
    std::memcpy(device, host, bytes);
}

void CpuBackend::download(void *host, const void *device, size_t bytes) {
  if (bytes > 0)
    std::memcpy(host, device, bytes);
}

// The plan verifier has checked every kernel and launch against
// plan::KernelAbi, which lists exactly the templates launch() runs.
void CpuBackend::loadKernels(const plan::Plan &) {}

void CpuBackend::launch(const plan::Plan &plan, int32_t kernelIndex, std::span<void *const> b,
                        std::span<const plan::Scalar> scalars, const BatchShape &batch) {
  const plan::KernelModule &kernel = *plan.kernels()->Get(kernelIndex);
  std::string_view name = kernel.kernel_template()->string_view();

  const auto *p = kernel.params();
  const cpu::ElementType t = elementType(kernel.dtype());
  const Scalars s{scalars, batch};
  auto heads = [&](bool withRotary) {
    // rope_kv_write<NH, KVH, HD, ROT, PAGE>, paged_attention<NH, KVH, HD, PAGE>
    return cpu::HeadShape{int(p->Get(0)), int(p->Get(1)), int(p->Get(2)),
                          withRotary ? int(p->Get(3)) : 0, int(p->Get(withRotary ? 4 : 3))};
  };
  if (name == "embedding")
    cpu::embedding(t, int(p->Get(0)), ints(b[0]), b[1], b[2], s.i(0));
  else if (name == "rms_norm")
    cpu::rmsNorm(t, int(p->Get(0)), b[0], b[1], b[2], s.f(0), s.i(1));
  else if (name == "add_rms_norm")
    cpu::addRmsNorm(t, int(p->Get(0)), b[0], b[1], b[2], b[3], b[4], s.f(0), s.i(1));
  else if (name == "rope_kv_write")
    cpu::ropeKvWrite(t, heads(true), b[0], ints(b[1]), ints(b[2]), ints(b[3]), ints(b[4]),
                     static_cast<const float *>(b[5]), b[6], b[7], b[8], s.i(0), s.i(1));
  else if (name == "paged_attention")
    cpu::pagedAttention(t, heads(false), b[0], b[1], b[2], ints(b[3]), ints(b[4]), ints(b[5]),
                        ints(b[6]), ints(b[7]), b[8], s.f(0), s.i(1), s.i(2), s.i(3));
  else if (name == "silu_mul")
    cpu::siluMul(t, int(p->Get(0)), b[0], b[1], s.i(0));
  else if (name == "gather_rows")
    cpu::gatherRows(t, int(p->Get(0)), b[0], ints(b[1]), b[2], s.i(0));
  else
    throw std::runtime_error("the CPU backend cannot run kernel template '" + std::string(name) + "'");
}

void CpuBackend::sample(float *logits, int64_t rows, int64_t cols, const sample::RowSampling *params,
                        const sample::LogitAdjustment *adjustments, sample::RowSample *out) {
  // Pool tasks must not throw (sampleRow allocates): the first error is
  // rethrown here.
  std::vector<std::exception_ptr> errors(static_cast<size_t>(rows));
  rowPool_.parallelFor(size_t(rows), [&](size_t r) {
    try {
      const sample::RowSampling &row = params[r];
      out[r] = sample::sampleRow({logits + r * size_t(cols), size_t(cols)}, row,
                                 {adjustments + row.first_adjustment, size_t(row.num_adjustments)});
    } catch (...) {
      errors[r] = std::current_exception();
    }
  });
  for (const std::exception_ptr &error : errors)
    if (error)
      std::rethrow_exception(error);
}

void CpuBackend::gemm(const GemmArgs &a) {
  cpu::gemm(elementType(a.input_dtype), elementType(a.out_dtype), a.rows, a.n, a.k, a.input,
            a.weight, a.bias, a.out);
}

} // namespace llmc::runtime
