// The CUDA backend: one GPU, one stream; kernels JIT-compiled with NVRTC
// (runtime/jit, disk-cached) and launched through the driver API (on sm_90,
// a plan's kernels and the GEMV as programmatic dependents of the kernel
// before them); GEMMs through cuBLASLt or, for up to 8 rows, the runtime's
// GEMV, whichever tuneGemms() timed faster for the shape.
#pragma once

#include "runtime/backend/Backend.h"
#include "runtime/backend/cuda/CudaDriver.h"

#include <cublasLt.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace llmc::runtime {

class CudaBackend final : public Backend {
public:
  explicit CudaBackend(int device = 0);
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  void *allocate(size_t bytes) override;
  void release(void *pointer) override;
  void upload(void *device, const void *host, size_t bytes) override;
  void download(void *host, const void *device, size_t bytes) override;
  void *allocateHost(size_t bytes) override;
  void releaseHost(void *pointer) override;
  void downloadAsync(void *host, const void *device, size_t bytes) override;
  void uploadAsync(void *device, const void *host, size_t bytes) override;
  bool asynchronous() const override { return true; }
  void loadKernels(const plan::Plan &plan) override;
  void launch(const plan::Plan &plan, int32_t kernel, std::span<void *const> buffers,
              std::span<const plan::Scalar> scalars, const BatchShape &batch) override;
  /// Through the kernel tuneGemms() picked for the GEMM's shape (cuBLASLt's
  /// first heuristic answer for a shape it did not see).
  void gemm(const GemmArgs &args) override;
  /// Times cuBLASLt's first kCublasLtCandidates heuristic answers and, where
  /// it takes the GEMM, the runtime's GEMV, which it picks unless cuBLASLt's
  /// best is faster than the GEMV's time over kGemvPreference.
  void tuneGemms(std::span<const GemmArgs> gemms) override;
  enum class GemmKernel { cublasLt, gemv };
  static constexpr int kCublasLtCandidates = 4;
  /// Timed alone, a shape's calls run back to back; in a decode graph the
  /// GEMV also starts during the kernels around it (a programmatic dependent,
  /// its weights copied before it waits), and a cuBLASLt kernel there holds
  /// back the dependent launches on both sides. On the H200, batch 1 took
  /// 4.09-4.11 ms with every GEMM on the GEMV against 4.37-4.40 with gate/up
  /// on cuBLASLt, which had timed 2-7% faster alone (docs/PERF.md).
  static constexpr double kGemvPreference = 1.1;
  /// A GEMM through the given kernel (gemv only where gemvTakes(args); for
  /// cuBLASLt, its heuristic's answer number `algo` where there is one, else
  /// its first): for benchmarks and tests comparing them.
  void gemm(const GemmArgs &args, GemmKernel kernel, int algo = 0);
  /// Whether the GEMV computes `args` (dtypes, rows, alignment).
  static bool gemvTakes(const GemmArgs &args);
  /// Whether the GEMV is loaded: loadKernels() on sm_90.
  bool hasGemv() const { return gemvRows_ != nullptr; }
  /// rows, n, k, input dtype, output dtype, bias.
  using GemmShape = std::tuple<int64_t, int64_t, int64_t, int, int, bool>;
  struct GemmChoice {
    GemmKernel kernel;
    int algo;  // cuBLASLt's answer number
    // The tuning's medians over its calls: cuBLASLt's first answer, its best
    // answer, the GEMV (NaN where it does not take the GEMM).
    double heuristicMs, cublasLtMs, gemvMs;
  };
  const std::map<GemmShape, GemmChoice> &gemmChoices() const { return gemmChoices_; }
  /// The choices as text: a first line naming what they were measured on
  /// (`key`: device, libraries, kernels), then one line per shape.
  static std::string formatGemmChoices(const std::string &key, const std::map<GemmShape, GemmChoice> &choices);
  /// The choices of a formatGemmChoices() text with the same key (none for
  /// another key); lines that do not parse are skipped.
  static std::map<GemmShape, GemmChoice> parseGemmChoices(const std::string &key, std::string_view text);
  /// Programmatic dependent launches (on by default from sm_90): off makes
  /// each kernel wait for the previous one's end, for comparison. Takes
  /// effect on later launches, not on graphs captured before.
  void setDependentLaunches(bool on) { dependentLaunches_ = on && sm90_; }
  /// Makes gemm(args) run `kernel` (the GEMV only where it takes the GEMM)
  /// instead of the tuned choice, for comparison; nullopt: the tuned choice.
  void setGemmOverride(std::optional<GemmKernel> kernel) { gemmOverride_ = kernel; }
  /// The kernel gemm(args) runs.
  GemmKernel chosenKernel(const GemmArgs &args) const;
  void sample(float *logits, int64_t rows, int64_t cols, const sample::RowSampling *params,
              const sample::LogitAdjustment *adjustments, sample::RowSample *out) override;
  void synchronize() override;
  std::optional<size_t> freeMemory() override;
  bool beginCapture() override;
  void *endCapture() override;
  void replay(void *graph) override;
  void destroyGraph(void *graph) override;

  const cuda::Driver &driver() const { return driver_; }
  CUstream stream() const { return stream_; }

  CUdevice device() const { return device_; }
  /// "sm_90a" for an H100/H200.
  const std::string &arch() const { return arch_; }

private:
  struct GemmPlan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    std::vector<cublasLtMatmulAlgo_t> algos;  // the heuristic's answers, best first
  };
  const GemmPlan &gemmPlan(const GemmArgs &args);
  void addDependentLaunch(CUlaunchConfig &config) const;
  int usableClusterSize(CUfunction function, const plan::KernelModule &kernel) const;
  bool clusterFits(CUfunction function, int blocks, int threads, int sharedBytes) const;
  std::pair<GemmKernel, int> choiceFor(const GemmArgs &args) const;  // kernel, cuBLASLt answer

  const cuda::Driver &driver_;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  CUstream stream_ = nullptr;
  std::string arch_;
  bool sm90_ = false;  // sm_90 or later: clusters, programmatic dependent launch
  bool dependentLaunches_ = false;
  int multiprocessors_ = 0;
  std::vector<CUmodule> modules_;      // the plan's modules and the runtime's
  std::vector<CUfunction> functions_;  // one per plan kernel module
  std::vector<int> maxClusters_;       // the cluster size each may launch with on this GPU
  CUfunction sampleRows_ = nullptr;
  int sampleRowBlocks_ = 1;  // the largest cluster sample_rows may split a row over here
  CUfunction gemvRows_ = nullptr;
  cublasLtHandle_t blas_ = nullptr;
  void *blasWorkspace_ = nullptr;
  size_t blasWorkspaceBytes_ = 32u << 20;
  std::map<GemmShape, GemmPlan> gemmPlans_;
  std::map<GemmShape, GemmChoice> gemmChoices_;
  std::optional<GemmKernel> gemmOverride_;
  // Choices persist in the cache directory, keyed by what they depend on, so
  // a later start on the same machine times nothing it timed before.
  std::string gemmChoicesKey_, gemmChoicesPath_;
  bool gemmChoicesLoaded_ = false;
  std::string deviceName_;
};

} // namespace llmc::runtime
