// The CPU reference backend: plain C++ loops with fp32 accumulation
// (backend/cpu/CpuOps), dispatched on each kernel's template name.
#pragma once

#include "runtime/backend/Backend.h"
#include "runtime/support/ThreadPool.h"

#include <algorithm>
#include <thread>

namespace llmc::runtime {

class CpuBackend final : public Backend {
public:
  std::string_view name() const override { return "cpu"; }
  void *allocate(size_t bytes) override;
  void release(void *pointer) override;
  void *allocateHost(size_t bytes) override { return allocate(bytes); }
  void releaseHost(void *pointer) override { release(pointer); }
  /// Launches run to completion before they return: the copy is made at once.
  void downloadAsync(void *host, const void *device, size_t bytes) override { download(host, device, bytes); }
  void uploadAsync(void *device, const void *host, size_t bytes) override { upload(device, host, bytes); }
  bool asynchronous() const override { return false; }
  void upload(void *device, const void *host, size_t bytes) override;
  void download(void *host, const void *device, size_t bytes) override;
  void loadKernels(const plan::Plan &plan) override;
  void launch(const plan::Plan &plan, int32_t kernel, std::span<void *const> buffers,
              std::span<const plan::Scalar> scalars, const BatchShape &batch) override;
  void gemm(const GemmArgs &args) override;
  void sample(float *logits, int64_t rows, int64_t cols, const sample::RowSampling *params,
              const sample::LogitAdjustment *adjustments, sample::RowSample *out) override;
  void synchronize() override {}

private:
  // sample() spreads rows over it (a 128K-vocabulary row takes 1-2 ms).
  ThreadPool rowPool_{std::min(15u, std::max(1u, std::thread::hardware_concurrency()) - 1)};
};

} // namespace llmc::runtime
