#include "runtime/backend/cuda/Probes.h"

#include "runtime/jit/Nvrtc.h"

#include <algorithm>
#include <random>
#include <stdexcept>
#include <vector>

namespace llmc::runtime::cuda {
namespace {

constexpr const char *kReadKernel = R"(
extern "C" __global__ void read_bandwidth(const uint4 *data, unsigned long long n, unsigned *out) {
  unsigned acc = 0;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)gridDim.x * blockDim.x) {
    uint4 v = __ldcs(data + i);  // streaming: do not keep it in L2
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) out[0] = acc;  // keeps the loads; practically never stores
}
)";

} // namespace

double medianMilliseconds(CudaBackend &backend, int repeats, const std::function<void()> &work) {
  const Driver &d = backend.driver();
  CUevent start, stop;
  d.check(d.cuEventCreate(&start, CU_EVENT_DEFAULT), "cuEventCreate");
  d.check(d.cuEventCreate(&stop, CU_EVENT_DEFAULT), "cuEventCreate");
  work();  // warm-up
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    d.check(d.cuEventRecord(start, backend.stream()), "cuEventRecord");
    work();
    d.check(d.cuEventRecord(stop, backend.stream()), "cuEventRecord");
    d.check(d.cuEventSynchronize(stop), "cuEventSynchronize");
    float ms = 0;
    d.check(d.cuEventElapsedTime(&ms, start, stop), "cuEventElapsedTime");
    times.push_back(ms);
  }
  d.cuEventDestroy(start);
  d.cuEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

EventTimeline::EventTimeline(CudaBackend &backend, size_t capacity) : backend_(backend) {
  events_.reserve(capacity);
  try {
    for (size_t i = 0; i < capacity; ++i) {
      CUevent event = nullptr;
      backend.driver().check(backend.driver().cuEventCreate(&event, CU_EVENT_DEFAULT), "cuEventCreate");
      events_.push_back(event);
    }
  } catch (...) {
    for (CUevent event : events_)  // the destructor does not run for a throwing constructor
      backend.driver().cuEventDestroy(event);
    throw;
  }
}

EventTimeline::~EventTimeline() {
  for (CUevent event : events_)
    backend_.driver().cuEventDestroy(event);
}

void EventTimeline::mark() {
  if (marked_ == events_.size())
    throw std::logic_error("EventTimeline: more marks than its capacity");
  backend_.driver().check(backend_.driver().cuEventRecord(events_[marked_++], backend_.stream()),
                          "cuEventRecord");
}

std::vector<double> EventTimeline::intervalsMs() {
  const Driver &d = backend_.driver();
  std::vector<double> intervals;
  if (marked_ == 0)
    return intervals;
  d.check(d.cuEventSynchronize(events_[marked_ - 1]), "cuEventSynchronize");
  for (size_t i = 1; i < marked_; ++i) {
    float ms = 0;
    d.check(d.cuEventElapsedTime(&ms, events_[i - 1], events_[i]), "cuEventElapsedTime");
    intervals.push_back(ms);
  }
  return intervals;
}

double readBandwidthGBs(CudaBackend &backend) {
  const Driver &d = backend.driver();
  const size_t bytes = size_t(4) << 30;
  DeviceBuffer data(backend, bytes), sums(backend, 256);
  void *buffer = data.get(), *out = sums.get();
  d.check(d.cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(buffer), 0x3f803f80u, bytes / 4,
                             backend.stream()),
          "cuMemsetD32Async");
  jit::CompiledModule compiled =
      jit::compileModule("read_bandwidth", kReadKernel, {"read_bandwidth"}, {}, backend.arch());
  CUmodule module;
  CUfunction function;
  d.check(d.cuModuleLoadData(&module, compiled.cubin.data()), "cuModuleLoadData");
  d.check(d.cuModuleGetFunction(&function, module, compiled.lowered_names[0].c_str()), "cuModuleGetFunction");
  int sms = 0;
  d.check(d.cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, backend.device()),
          "cuDeviceGetAttribute");
  unsigned long long n = bytes / 16;
  void *params[] = {&buffer, &n, &out};
  double ms = medianMilliseconds(backend, 10, [&] {
    d.check(d.cuLaunchKernel(function, unsigned(sms * 4), 1, 1, 1024, 1, 1, 0, backend.stream(),
                             params, nullptr),
            "cuLaunchKernel");
  });
  d.cuModuleUnload(module);
  return double(bytes) / (ms * 1e-3) / 1e9;
}

double gemmTflops(CudaBackend &backend, int64_t size) {
  const size_t bytes = size_t(size * size) * 2;
  std::vector<uint16_t> host(size_t(size * size));
  std::mt19937 engine(7);
  for (uint16_t &value : host)  // bf16 values in [0.5, 2) with random mantissas
    value = uint16_t(0x3f00 + (engine() & 0xff));
  DeviceBuffer a(backend, bytes), w(backend, bytes), c(backend, bytes);
  backend.upload(a.get(), host.data(), bytes);
  backend.upload(w.get(), host.data(), bytes);
  GemmArgs args{a.get(), w.get(), nullptr, c.get(), size, size, size, plan::DType::bf16, plan::DType::bf16};
  double ms = medianMilliseconds(backend, 10, [&] { backend.gemm(args); });
  return 2.0 * double(size) * double(size) * double(size) / (ms * 1e-3) / 1e12;
}

} // namespace llmc::runtime::cuda
