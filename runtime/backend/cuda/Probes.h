// Measurements of the machine's own limits, taken in the same run as the
// figures they are compared with (llmrun bench).
#pragma once

#include "runtime/backend/cuda/CudaBackend.h"

#include <functional>
#include <vector>

namespace llmc::runtime::cuda {

/// Median milliseconds of `work` on the backend's stream over `repeats` runs
/// (CUDA events around each run), after one warm-up run.
double medianMilliseconds(CudaBackend &backend, int repeats, const std::function<void()> &work);

/// Events recorded on the backend's stream at chosen points; the intervals
/// between consecutive marks are what the GPU spent between them.
class EventTimeline {
public:
  EventTimeline(CudaBackend &backend, size_t capacity);
  ~EventTimeline();
  EventTimeline(const EventTimeline &) = delete;
  EventTimeline &operator=(const EventTimeline &) = delete;
  /// Records the next event (at most `capacity`).
  void mark();
  /// Waits for the last mark; milliseconds between consecutive marks.
  std::vector<double> intervalsMs();

private:
  CudaBackend &backend_;
  std::vector<CUevent> events_;
  size_t marked_ = 0;
};

/// Read bandwidth in GB/s: a kernel that reads a 4 GiB buffer (far beyond the
/// L2) of non-zero data and writes almost nothing.
double readBandwidthGBs(CudaBackend &backend);

/// cuBLASLt bf16 GEMM rate in TFLOP/s on a size^3 problem (random data).
double gemmTflops(CudaBackend &backend, int64_t size);

} // namespace llmc::runtime::cuda
