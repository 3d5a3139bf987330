// The Backend interface: device memory, copies, kernel launches and GEMMs.
// The executor resolves every buffer to a pointer once; a backend only runs
// steps. Implementations: cpu/ (reference, the CI oracle) and cuda/.
#pragma once

#include "runtime/plan/PlanFile.h"
#include "runtime/sample/RowSampling.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace llmc::runtime {

/// The symbolic sizes of the forward being run.
struct BatchShape {
  int64_t num_tokens = 0;
  int64_t num_seqs = 0;
};

/// out[rows, n] = input[rows, k] x weight[n, k]^T (+ bias[n]).
struct GemmArgs {
  const void *input;
  const void *weight;
  const void *bias;  // nullptr: none
  void *out;
  int64_t rows, n, k;
  plan::DType input_dtype;  // also the weight's and bias's
  plan::DType out_dtype;
};

class Backend {
public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  /// Device memory (host memory on the CPU backend). Throws on exhaustion.
  virtual void *allocate(size_t bytes) = 0;
  virtual void release(void *pointer) = 0;
  virtual void upload(void *device, const void *host, size_t bytes) = 0;
  virtual void download(void *host, const void *device, size_t bytes) = 0;
  /// Host memory the device copies into without staging (page-locked on
  /// CUDA): what downloadAsync() writes to.
  virtual void *allocateHost(size_t bytes) = 0;
  virtual void releaseHost(void *pointer) = 0;
  /// Queues a copy into host memory from allocateHost() behind the launched
  /// steps and returns; the bytes are there once synchronize() returns.
  virtual void downloadAsync(void *host, const void *device, size_t bytes) = 0;
  /// Queues a copy from host memory from allocateHost() ahead of the steps
  /// launched after it and returns; the host bytes must stay as they are
  /// until synchronize() returns.
  virtual void uploadAsync(void *device, const void *host, size_t bytes) = 0;
  /// Whether launches return before their work is done (a device with its
  /// own queue), so that host work can run beside it.
  virtual bool asynchronous() const = 0;

  /// Prepares every kernel module of the plan (the CUDA backend compiles
  /// them); called once before any launch.
  virtual void loadKernels(const plan::Plan &plan) = 0;
  /// Runs plan.kernels[kernel] with its arguments resolved to pointers.
  virtual void launch(const plan::Plan &plan, int32_t kernel, std::span<void *const> buffers,
                      std::span<const plan::Scalar> scalars, const BatchShape &batch) = 0;
  virtual void gemm(const GemmArgs &args) = 0;
  /// The GEMMs of one forward, in step order, for a batch shape the backend
  /// will run often (a decode size). A backend with more than one GEMM kernel
  /// times its kernels on these very calls (their weights, so from memory)
  /// and keeps the fastest for each GEMM shape. Overwrites the outputs: call
  /// only while no forward is in flight.
  virtual void tuneGemms(std::span<const GemmArgs> gemms) {}
  /// Samples each of `rows` fp32 rows of logits[rows, cols] as
  /// runtime/sample/Sampler.h defines: row r by params[r] and its
  /// adjustments (applied to the logits in place), the result in out[r].
  /// Every pointer is device memory.
  virtual void sample(float *logits, int64_t rows, int64_t cols, const sample::RowSampling *params,
                      const sample::LogitAdjustment *adjustments, sample::RowSample *out) = 0;
  /// Waits until every launched step has finished.
  virtual void synchronize() = 0;
  /// Free device memory in bytes, where the backend can tell (CUDA).
  virtual std::optional<size_t> freeMemory() { return std::nullopt; }

  /// Graph capture (CUDA graphs): between beginCapture() and endCapture(),
  /// launches and GEMMs are recorded instead of run; replay() runs them again
  /// with the same arguments. Backends without graphs return false / null.
  virtual bool beginCapture() { return false; }
  virtual void *endCapture() { return nullptr; }
  virtual void replay(void *graph) {}
  virtual void destroyGraph(void *graph) {}
};

/// Device memory owned by a scope (probes, benchmarks, tests).
class DeviceBuffer {
public:
  DeviceBuffer(Backend &backend, size_t bytes)
      : backend_(backend), pointer_(backend.allocate(bytes > 0 ? bytes : 1)) {}
  ~DeviceBuffer() {
    try {
      backend_.release(pointer_);
    } catch (const std::exception &) {  // after a sticky device error; must not throw here
    }
  }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  template <typename T = void> T *get() const { return static_cast<T *>(pointer_); }

private:
  Backend &backend_;
  void *pointer_;
};

/// "cpu", or "auto" (the CUDA backend when a GPU is present; CPU otherwise).
/// Throws std::invalid_argument for an unknown or unavailable backend.
std::unique_ptr<Backend> createBackend(std::string_view name);

} // namespace llmc::runtime
