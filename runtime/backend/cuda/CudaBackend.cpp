#include "runtime/backend/cuda/CudaBackend.h"
#include "runtime/backend/cuda/GemvShape.h"
#include "runtime/backend/cuda/Probes.h"
#include "runtime/backend/cuda/SampleShape.h"

#include "kernels/geometry.h"

#include "runtime/jit/KernelCache.h"
#include "runtime/jit/Nvrtc.h"
#include "runtime/jit/RuntimeModules.h"
#include "runtime/support/Hash.h"
#include "runtime/support/Math.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace llmc::runtime {
namespace {

void checkBlas(cublasStatus_t status, const char *what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + " failed: cuBLASLt status " +
                             std::to_string(int(status)));
}

cudaDataType_t blasType(plan::DType dtype) {
  switch (dtype) {
  case plan::DType::f32: return CUDA_R_32F;
  case plan::DType::f16: return CUDA_R_16F;
  case plan::DType::bf16: return CUDA_R_16BF;
  case plan::DType::i32: break;
  }
  throw std::invalid_argument("cuBLASLt GEMMs take f32, f16 or bf16");
}

CUdeviceptr devicePointer(const void *pointer) { return reinterpret_cast<CUdeviceptr>(pointer); }

CudaBackend::GemmShape shapeOf(const GemmArgs &g) {
  return {g.rows, g.n, g.k, int(g.input_dtype), int(g.out_dtype), g.bias != nullptr};
}

// The launch attribute that groups each `blocks` consecutive blocks (along x)
// into a thread-block cluster.
CUlaunchAttribute clusterOf(int blocks) {
  CUlaunchAttribute cluster{};
  cluster.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
  cluster.value.clusterDim.x = unsigned(blocks);
  cluster.value.clusterDim.y = cluster.value.clusterDim.z = 1;
  return cluster;
}

} // namespace

CudaBackend::CudaBackend(int device) : driver_(cuda::Driver::get()) {
  int count = 0;
  driver_.check(driver_.cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (device < 0 || device >= count)
    throw std::runtime_error("no CUDA device " + std::to_string(device) + " (found " +
                             std::to_string(count) + ")");
  driver_.check(driver_.cuDeviceGet(&device_, device), "cuDeviceGet");
  int major = 0, minor = 0;
  driver_.check(driver_.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device_),
                "cuDeviceGetAttribute");
  driver_.check(driver_.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device_),
                "cuDeviceGetAttribute");
  // Compute capability 9.0 (H100/H200) compiles for sm_90a, whose
  // arch-specific instructions (wgmma) the attention kernel uses.
  arch_ = "sm_" + std::to_string(major * 10 + minor) + (major == 9 && minor == 0 ? "a" : "");
  char name[256] = {};
  driver_.check(driver_.cuDeviceGetName(name, sizeof name - 1, device_), "cuDeviceGetName");
  deviceName_ = name;
  sm90_ = dependentLaunches_ = major >= 9;
  driver_.check(driver_.cuDeviceGetAttribute(&multiprocessors_, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device_),
                "cuDeviceGetAttribute");
  driver_.check(driver_.cuDevicePrimaryCtxRetain(&context_, device_), "cuDevicePrimaryCtxRetain");
  driver_.check(driver_.cuCtxSetCurrent(context_), "cuCtxSetCurrent");
  driver_.check(driver_.cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  checkBlas(cublasLtCreate(&blas_), "cublasLtCreate");
  blasWorkspace_ = allocate(blasWorkspaceBytes_);
}

CudaBackend::~CudaBackend() {
  // Teardown errors cannot be reported from a destructor; the context goes
  // with the process anyway.
  driver_.cuStreamSynchronize(stream_);
  for (auto &[key, plan] : gemmPlans_) {
    cublasLtMatmulDescDestroy(plan.desc);
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
  }
  if (blas_)
    cublasLtDestroy(blas_);
  if (blasWorkspace_)
    driver_.cuMemFree(devicePointer(blasWorkspace_));
  for (CUmodule module : modules_)
    driver_.cuModuleUnload(module);
  driver_.cuStreamDestroy(stream_);
  driver_.cuDevicePrimaryCtxRelease(device_);
}

void *CudaBackend::allocate(size_t bytes) {
  CUdeviceptr pointer = 0;
  CUresult result = driver_.cuMemAlloc(&pointer, std::max<size_t>(bytes, 256));
  if (result == CUDA_ERROR_OUT_OF_MEMORY) {
    size_t free = 0, total = 0;
    driver_.cuMemGetInfo(&free, &total);
    throw std::runtime_error("GPU out of memory allocating " + std::to_string(bytes) + " bytes (" +
                             std::to_string(free >> 20) + " MiB free of " +
                             std::to_string(total >> 20) + " MiB)");
  }
  driver_.check(result, "cuMemAlloc");
  return reinterpret_cast<void *>(pointer);
}

void CudaBackend::release(void *pointer) {
  driver_.check(driver_.cuMemFree(devicePointer(pointer)), "cuMemFree");
}

// Host memory here is pageable and may change right after the call returns,
// so the copy completes before returning.
void CudaBackend::upload(void *device, const void *host, size_t bytes) {
  driver_.check(driver_.cuMemcpyHtoDAsync(devicePointer(device), host, bytes, stream_), "cuMemcpyHtoDAsync");
  driver_.check(driver_.cuStreamSynchronize(stream_), "cuStreamSynchronize");
}

void CudaBackend::download(void *host, const void *device, size_t bytes) {
  driver_.check(driver_.cuMemcpyDtoHAsync(host, devicePointer(device), bytes, stream_), "cuMemcpyDtoHAsync");
  driver_.check(driver_.cuStreamSynchronize(stream_), "cuStreamSynchronize");
}

void *CudaBackend::allocateHost(size_t bytes) {
  void *pointer = nullptr;
  driver_.check(driver_.cuMemHostAlloc(&pointer, bytes, 0), "cuMemHostAlloc");
  return pointer;
}

void CudaBackend::releaseHost(void *pointer) { driver_.check(driver_.cuMemFreeHost(pointer), "cuMemFreeHost"); }

// To and from page-locked memory a copy is truly asynchronous: it runs on
// the stream in order with the launched work, and the host goes on.
void CudaBackend::downloadAsync(void *host, const void *device, size_t bytes) {
  driver_.check(driver_.cuMemcpyDtoHAsync(host, devicePointer(device), bytes, stream_), "cuMemcpyDtoHAsync");
}

void CudaBackend::uploadAsync(void *device, const void *host, size_t bytes) {
  driver_.check(driver_.cuMemcpyHtoDAsync(devicePointer(device), host, bytes, stream_), "cuMemcpyHtoDAsync");
}

void CudaBackend::loadKernels(const plan::Plan &plan) {
  std::vector<jit::ModuleBinary> binaries =
      jit::compileModules(plan, arch_, jit::defaultCacheDir(), jit::runtimeModules());
  for (CUmodule module : modules_)  // kernels of a previously loaded plan
    driver_.check(driver_.cuModuleUnload(module), "cuModuleUnload");
  modules_.clear();
  functions_.clear();
  maxClusters_.clear();
  // The runtime's modules come after the plan's.
  const size_t planModules = binaries.size() - jit::kNumRuntimeModules;
  auto loadFunction = [&](const jit::ModuleBinary &binary) {
    CUmodule module = nullptr;
    driver_.check(driver_.cuModuleLoadData(&module, binary.cubin.data()), "cuModuleLoadData");
    modules_.push_back(module);
    CUfunction function = nullptr;
    driver_.check(driver_.cuModuleGetFunction(&function, module, binary.lowered_name.c_str()),
                  "cuModuleGetFunction");
    return function;
  };
  // A kernel's static shared memory adds to the dynamic amount, and above
  // 48 KB in all a launch needs the opt-in; kernels that stage data there
  // (attention's K/V rings, the GEMV's weight ring) also want as many blocks
  // a multiprocessor as it holds, not a larger L1.
  auto stageInSharedMemory = [&](CUfunction function, int dynamicBytes) {
    driver_.check(driver_.cuFuncSetAttribute(function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamicBytes),
                  "cuFuncSetAttribute");
    driver_.check(driver_.cuFuncSetAttribute(function, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                                             CU_SHAREDMEM_CARVEOUT_MAX_SHARED),
                  "cuFuncSetAttribute");
  };
  sampleRows_ = loadFunction(binaries[planModules + jit::kSampleRowsModule]);
  // The sampler splits a few rows over clusters (sm_90) of up to the
  // portable 8 blocks, as large as a GPC here can place.
  const int sampleMaxBlocks = sm90_ ? llmc_kernels::kPortableClusterBlocks : 1;
  driver_.check(driver_.cuFuncSetAttribute(sampleRows_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                           sample_rows::sharedBytes(sampleMaxBlocks)),
                "cuFuncSetAttribute");
  sampleRowBlocks_ = 1;
  for (int blocks = sampleMaxBlocks; blocks > 1; blocks /= 2)
    if (clusterFits(sampleRows_, blocks, sample_rows::kThreads, sample_rows::sharedBytes(blocks))) {
      sampleRowBlocks_ = blocks;
      break;
    }
  // The GEMV streams its weights with bulk copies (sm_90) into a ring that
  // takes most of a multiprocessor's shared memory (GemvShape.h); where the
  // ring does not fit a block (before sm_90, or parts with about 100 KB)
  // every GEMM goes to cuBLASLt.
  int sharedOptIn = 0;
  driver_.check(
      driver_.cuDeviceGetAttribute(&sharedOptIn, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, device_),
      "cuDeviceGetAttribute");
  if (sm90_ && sharedOptIn >= gemv::kSharedBytes + gemv::kStaticSharedBytes) {
    gemvRows_ = loadFunction(binaries[planModules + jit::kGemvModule]);
    stageInSharedMemory(gemvRows_, gemv::kSharedBytes);
  }
  binaries.resize(planModules);
  for (size_t i = 0; i < binaries.size(); ++i) {
    CUfunction function = loadFunction(binaries[i]);
    const plan::KernelModule &kernel = *plan.kernels()->Get(uint32_t(i));
    if (kernel.shared_bytes() > 0)
      stageInSharedMemory(function, kernel.shared_bytes());
    functions_.push_back(function);
    maxClusters_.push_back(sm90_ ? usableClusterSize(function, kernel) : 1);
  }
}

// The largest cluster, up to the plan's max_cluster, that this GPU can place
// for the kernel: sizes beyond the portable 8 need an opt-in, which a part
// without non-portable clusters refuses, and a GPC with room for all the
// blocks at once, which not every part (or MIG slice) has. Otherwise 8.
int CudaBackend::usableClusterSize(CUfunction function, const plan::KernelModule &kernel) const {
  const int wanted = kernel.max_cluster();
  if (wanted <= llmc_kernels::kPortableClusterBlocks)
    return wanted;
  if (driver_.cuFuncSetAttribute(function, CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1) != CUDA_SUCCESS)
    return llmc_kernels::kPortableClusterBlocks;
  return clusterFits(function, wanted, kernel.block_threads(), kernel.shared_bytes())
             ? wanted
             : llmc_kernels::kPortableClusterBlocks;
}

// Whether this GPU can place at least one cluster of `blocks` blocks of the
// kernel (a GPC with room for all of them at once). The kernel must already
// allow `sharedBytes` of dynamic shared memory.
bool CudaBackend::clusterFits(CUfunction function, int blocks, int threads, int sharedBytes) const {
  CUlaunchAttribute cluster = clusterOf(blocks);
  CUlaunchConfig config{};
  config.gridDimX = unsigned(blocks);
  config.gridDimY = config.gridDimZ = 1;
  config.blockDimX = unsigned(threads);
  config.blockDimY = config.blockDimZ = 1;
  config.sharedMemBytes = unsigned(sharedBytes);
  config.hStream = stream_;
  config.attrs = &cluster;
  config.numAttrs = 1;
  int clusters = 0;
  const CUresult placed = driver_.cuOccupancyMaxActiveClusters(&clusters, function, &config);
  return placed == CUDA_SUCCESS && clusters > 0;
}

// Lets the kernel start while the previous kernel on the stream finishes
// (programmatic dependent launch, sm_90): every kernel the backend launches
// this way first waits in kernels/common.cuh's begin_after_previous_kernels()
// (the GEMV after loading its first weights). config.attrs must have room.
void CudaBackend::addDependentLaunch(CUlaunchConfig &config) const {
  if (!dependentLaunches_)
    return;
  CUlaunchAttribute &attribute = config.attrs[config.numAttrs++];
  attribute.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  attribute.value.programmaticStreamSerializationAllowed = 1;
}

void CudaBackend::launch(const plan::Plan &plan, int32_t kernelIndex, std::span<void *const> buffers,
                         std::span<const plan::Scalar> scalars, const BatchShape &batch) {
  const plan::KernelModule &kernel = *plan.kernels()->Get(uint32_t(kernelIndex));
  unsigned grid[3];
  for (int d = 0; d < 3; ++d) {
    const plan::SymExpr &e = *kernel.grid()->Get(uint32_t(d));
    const int64_t value =
        ceilDiv(e.tokens() * batch.num_tokens + e.seqs() * batch.num_seqs + e.constant(), e.divisor());
    if (value <= 0)
      return;  // an empty grid has nothing to do (and cannot be launched)
    grid[d] = unsigned(value);
  }
  // Kernel parameters: the buffer pointers, then each scalar by value.
  struct Argument {
    union {
      void *pointer;
      float f;
      int32_t i;
    };
  };
  Argument storage[32];
  void *params[32];
  if (buffers.size() + scalars.size() > 32)
    throw std::logic_error("kernel launch with more than 32 arguments");
  size_t n = 0;
  for (void *buffer : buffers)
    storage[n].pointer = buffer, params[n] = &storage[n].pointer, ++n;
  for (const plan::Scalar &scalar : scalars) {
    switch (scalar.kind()) {
    case plan::ScalarKind::f32: storage[n].f = scalar.f(); params[n] = &storage[n].f; break;
    case plan::ScalarKind::i32: storage[n].i = scalar.i(); params[n] = &storage[n].i; break;
    case plan::ScalarKind::num_tokens: storage[n].i = int32_t(batch.num_tokens); params[n] = &storage[n].i; break;
    case plan::ScalarKind::num_seqs: storage[n].i = int32_t(batch.num_seqs); params[n] = &storage[n].i; break;
    }
    ++n;
  }
  CUlaunchConfig config{};
  config.gridDimX = grid[0];
  config.gridDimY = grid[1];
  config.gridDimZ = grid[2];
  config.blockDimX = unsigned(kernel.block_threads());
  config.blockDimY = config.blockDimZ = 1;
  config.sharedMemBytes = unsigned(kernel.shared_bytes());
  config.hStream = stream_;
  CUlaunchAttribute attributes[2]{};
  config.attrs = attributes;
  if (kernel.waits_for_previous())  // plans before schema 1.4: their kernels do not wait
    addDependentLaunch(config);
  if (const int maxCluster = maxClusters_.at(size_t(kernelIndex)); maxCluster > 1) {
    const int blocks =
        llmc_kernels::cluster_blocks(int64_t(grid[0]) * grid[1] * grid[2], maxCluster, multiprocessors_);
    attributes[config.numAttrs++] = clusterOf(blocks);
    config.gridDimX *= unsigned(blocks);
  }
  driver_.check(driver_.cuLaunchKernelEx(&config, functions_.at(size_t(kernelIndex)), params, nullptr),
                kernel.name()->c_str());
}

// Row-major out[rows, n] = in[rows, k] x w[n, k]^T is, column-major,
// out^T (n x rows) = w^T^T ... i.e. C(n x rows) = op(W)(n x k) * IN(k x rows)
// with W stored k x n (transposed) and IN stored k x rows.
const CudaBackend::GemmPlan &CudaBackend::gemmPlan(const GemmArgs &g) {
  const GemmShape key = shapeOf(g);
  auto it = gemmPlans_.find(key);
  if (it != gemmPlans_.end())
    return it->second;
  GemmPlan p;
  const cudaDataType_t in = blasType(g.input_dtype), out = blasType(g.out_dtype);
  checkBlas(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
  checkBlas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)),
            "set TRANSA");
  checkBlas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof(none)),
            "set TRANSB");
  if (g.bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    checkBlas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
              "set EPILOGUE");
    const cudaDataType_t biasType = in;
    checkBlas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &biasType,
                                             sizeof(biasType)),
              "set BIAS_DATA_TYPE");
  }
  checkBlas(cublasLtMatrixLayoutCreate(&p.a, in, uint64_t(g.k), uint64_t(g.n), g.k), "layout A");
  checkBlas(cublasLtMatrixLayoutCreate(&p.b, in, uint64_t(g.k), uint64_t(g.rows), g.k), "layout B");
  checkBlas(cublasLtMatrixLayoutCreate(&p.c, out, uint64_t(g.n), uint64_t(g.rows), g.n), "layout C");

  cublasLtMatmulPreference_t preference = nullptr;
  checkBlas(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  checkBlas(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &blasWorkspaceBytes_, sizeof(blasWorkspaceBytes_)),
            "set MAX_WORKSPACE_BYTES");
  cublasLtMatmulHeuristicResult_t results[kCublasLtCandidates]{};
  int found = 0;
  cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(blas_, p.desc, p.a, p.b, p.c, p.c, preference,
                                                         kCublasLtCandidates, results, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  checkBlas(status, "cublasLtMatmulAlgoGetHeuristic");
  for (int i = 0; i < found; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS)
      p.algos.push_back(results[i].algo);
  if (p.algos.empty())
    throw std::runtime_error("cuBLASLt has no algorithm for a " + std::to_string(g.rows) + "x" +
                             std::to_string(g.n) + "x" + std::to_string(g.k) + " GEMM");
  return gemmPlans_.emplace(key, p).first->second;
}

bool CudaBackend::gemvTakes(const GemmArgs &g) {
  const bool inputs = g.input_dtype == plan::DType::bf16 || g.input_dtype == plan::DType::f16;
  const bool output = g.out_dtype == g.input_dtype || g.out_dtype == plan::DType::f32;
  const bool aligned = (reinterpret_cast<uintptr_t>(g.input) | reinterpret_cast<uintptr_t>(g.weight)) % 16 == 0;
  return inputs && output && gemv::takes(g.rows, g.n, g.k, aligned);
}

// What gemm(g) runs: the tuned choice (or the override) where the GEMV takes
// these very operands, else cuBLASLt (its tuned answer, or its first for an
// untuned shape).
std::pair<CudaBackend::GemmKernel, int> CudaBackend::choiceFor(const GemmArgs &g) const {
  GemmKernel kernel = GemmKernel::cublasLt;
  int algo = 0;
  if (auto choice = gemmChoices_.find(shapeOf(g)); choice != gemmChoices_.end())
    kernel = choice->second.kernel, algo = choice->second.algo;
  if (gemmOverride_)
    kernel = *gemmOverride_;
  return {kernel == GemmKernel::gemv && hasGemv() && gemvTakes(g) ? GemmKernel::gemv : GemmKernel::cublasLt, algo};
}

CudaBackend::GemmKernel CudaBackend::chosenKernel(const GemmArgs &g) const { return choiceFor(g).first; }

void CudaBackend::gemm(const GemmArgs &g) {
  const auto [kernel, algo] = choiceFor(g);
  gemm(g, kernel, algo);
}

// Each shape is timed through every candidate over all of its calls in the
// forward (one per layer: together far larger than the L2, as in a real
// forward), one run after a warm-up. Shapes timed before on this machine
// (the cache file) are not timed again.
void CudaBackend::tuneGemms(std::span<const GemmArgs> gemms) {
  if (!gemmChoicesLoaded_) {
    gemmChoicesLoaded_ = true;
    gemmChoicesKey_ = "llmc gemm choices 2; " + deviceName_ + "; " + arch_ + "; " +
                      std::to_string(multiprocessors_) + " SMs; cuBLASLt " + std::to_string(cublasLtGetVersion()) +
                      "; NVRTC " + jit::nvrtcVersion() + "; " + std::to_string(kCublasLtCandidates) +
                      " answers; gemv " +
                      std::to_string(fnv1a(jit::runtimeModules()[jit::kGemvModule].source));
    gemmChoicesPath_ = (std::filesystem::path(jit::defaultCacheDir()) / "gemm" /
                        (std::to_string(fnv1a(gemmChoicesKey_)) + ".txt"))
                           .string();
    std::ifstream file(gemmChoicesPath_);
    const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    gemmChoices_.merge(parseGemmChoices(gemmChoicesKey_, text));
  }
  std::map<GemmShape, std::vector<GemmArgs>> calls;
  for (const GemmArgs &g : gemms)
    if (g.rows > 0 && !gemmChoices_.count(shapeOf(g)))
      calls[shapeOf(g)].push_back(g);
  if (calls.empty())
    return;
  for (const auto &[shape, list] : calls) {
    auto time = [&](GemmKernel kernel, int algo) {
      return cuda::medianMilliseconds(*this, 1, [&] {
        for (const GemmArgs &g : list)
          gemm(g, kernel, algo);
      });
    };
    GemmChoice choice{GemmKernel::cublasLt, 0, time(GemmKernel::cublasLt, 0), 0, NAN};
    choice.cublasLtMs = choice.heuristicMs;
    for (int algo = 1; algo < int(gemmPlan(list.front()).algos.size()); ++algo)
      if (const double ms = time(GemmKernel::cublasLt, algo); ms < choice.cublasLtMs)
        choice.cublasLtMs = ms, choice.algo = algo;
    if (hasGemv() && std::all_of(list.begin(), list.end(), gemvTakes)) {
      choice.gemvMs = time(GemmKernel::gemv, 0);
      if (choice.gemvMs < choice.cublasLtMs * kGemvPreference)
        choice.kernel = GemmKernel::gemv;
    }
    gemmChoices_[shape] = choice;
  }
  jit::writeCacheFile(gemmChoicesPath_, formatGemmChoices(gemmChoicesKey_, gemmChoices_));
}

std::string CudaBackend::formatGemmChoices(const std::string &key, const std::map<GemmShape, GemmChoice> &choices) {
  std::ostringstream text;
  text << key << "\n";
  text.precision(9);
  for (const auto &[shape, choice] : choices) {
    const auto &[rows, n, k, input, output, bias] = shape;
    text << rows << ' ' << n << ' ' << k << ' ' << input << ' ' << output << ' ' << bias << ' '
         << int(choice.kernel) << ' ' << choice.algo << ' ' << choice.heuristicMs << ' ' << choice.cublasLtMs << ' '
         << choice.gemvMs << "\n";
  }
  return text.str();
}

std::map<CudaBackend::GemmShape, CudaBackend::GemmChoice> CudaBackend::parseGemmChoices(const std::string &key,
                                                                                         std::string_view text) {
  std::map<GemmShape, GemmChoice> choices;
  std::istringstream lines{std::string(text)};
  std::string line;
  if (!std::getline(lines, line) || line != key)
    return choices;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    int64_t rows = 0, n = 0, k = 0;
    int input = 0, output = 0, bias = 0, kernel = 0, algo = 0;
    std::string ms[3];  // "nan" is a valid GEMV time
    if (!(fields >> rows >> n >> k >> input >> output >> bias >> kernel >> algo >> ms[0] >> ms[1] >> ms[2]) ||
        rows < 1 || n < 1 || k < 1 || (bias != 0 && bias != 1) || (kernel != 0 && kernel != 1) || algo < 0 ||
        algo >= kCublasLtCandidates)
      continue;
    GemmChoice choice{GemmKernel(kernel), algo, 0, 0, 0};
    try {
      choice.heuristicMs = std::stod(ms[0]);
      choice.cublasLtMs = std::stod(ms[1]);
      choice.gemvMs = std::stod(ms[2]);
    } catch (const std::exception &) {
      continue;
    }
    choices[{rows, n, k, input, output, bias == 1}] = choice;
  }
  return choices;
}

void CudaBackend::gemm(const GemmArgs &g, GemmKernel kernel, int algo) {
  if (g.rows == 0)
    return;
  if (kernel == GemmKernel::gemv) {
    if (!hasGemv() || !gemvTakes(g))
      throw std::logic_error("gemv_rows needs loadKernels() on sm_90 and a GEMM it takes (gemv::takes)");
    int flags = (g.input_dtype == plan::DType::f16 ? gemv::kHalfInputs : 0) |
                (g.out_dtype == plan::DType::f32 ? gemv::kFloatOutput : 0);
    int rows = int(g.rows), n = int(g.n), k = int(g.k);
    const void *input = g.input, *weight = g.weight, *bias = g.bias;
    void *out = g.out;
    void *arguments[] = {&input, &weight, &bias, &out, &rows, &n, &k, &flags};
    CUlaunchAttribute attributes[1]{};
    CUlaunchConfig config{};
    config.gridDimX = unsigned(gemv::gridBlocks(g.n, multiprocessors_));
    config.gridDimY = config.gridDimZ = 1;
    config.blockDimX = gemv::kThreads;
    config.blockDimY = config.blockDimZ = 1;
    config.sharedMemBytes = gemv::kSharedBytes;
    config.hStream = stream_;
    config.attrs = attributes;
    addDependentLaunch(config);
    driver_.check(driver_.cuLaunchKernelEx(&config, gemvRows_, arguments, nullptr), "gemv_rows");
    return;
  }
  const GemmPlan &p = gemmPlan(g);
  if (g.bias)
    checkBlas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias,
                                             sizeof(g.bias)),
              "set BIAS_POINTER");
  const float alpha = 1.0f, beta = 0.0f;
  const cublasLtMatmulAlgo_t &chosen = p.algos[algo >= 0 && algo < int(p.algos.size()) ? size_t(algo) : 0];
  checkBlas(cublasLtMatmul(blas_, p.desc, &alpha, g.weight, p.a, g.input, p.b, &beta, g.out, p.c,
                           g.out, p.c, &chosen, blasWorkspace_, blasWorkspaceBytes_, stream_),
            "cublasLtMatmul");
}

void CudaBackend::sample(float *logits, int64_t rows, int64_t cols, const sample::RowSampling *params,
                         const sample::LogitAdjustment *adjustments, sample::RowSample *out) {
  if (rows <= 0)
    return;
  if (!sampleRows_ || cols <= 0 || cols > (int64_t(1) << 30))  // the kernel indexes in int
    throw std::logic_error("sample_rows needs loadKernels() and 1 to 2^30 columns");
  long long columns = cols;
  void *arguments[] = {&logits, &columns, &params, &adjustments, &out};
  const int rowBlocks = sample_rows::rowBlocks(rows, sampleRowBlocks_, multiprocessors_);
  CUlaunchAttribute cluster = clusterOf(rowBlocks);
  CUlaunchConfig config{};
  config.gridDimX = unsigned(rows * rowBlocks);
  config.gridDimY = config.gridDimZ = 1;
  config.blockDimX = sample_rows::kThreads;
  config.blockDimY = config.blockDimZ = 1;
  config.sharedMemBytes = unsigned(sample_rows::sharedBytes(rowBlocks));
  config.hStream = stream_;
  config.attrs = &cluster;
  config.numAttrs = rowBlocks > 1 ? 1 : 0;
  driver_.check(driver_.cuLaunchKernelEx(&config, sampleRows_, arguments, nullptr), "sample_rows");
}

std::optional<size_t> CudaBackend::freeMemory() {
  size_t free = 0, total = 0;
  driver_.check(driver_.cuMemGetInfo(&free, &total), "cuMemGetInfo");
  return free;
}

void CudaBackend::synchronize() {
  driver_.check(driver_.cuStreamSynchronize(stream_), "cuStreamSynchronize");
}

bool CudaBackend::beginCapture() {
  driver_.check(driver_.cuStreamBeginCapture(stream_, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
                "cuStreamBeginCapture");
  return true;
}

void *CudaBackend::endCapture() {
  CUgraph graph = nullptr;
  driver_.check(driver_.cuStreamEndCapture(stream_, &graph), "cuStreamEndCapture");
  CUgraphExec exec = nullptr;
  CUresult result = driver_.cuGraphInstantiateWithFlags(&exec, graph, 0);
  driver_.cuGraphDestroy(graph);
  driver_.check(result, "cuGraphInstantiate");
  return exec;
}

void CudaBackend::replay(void *graph) {
  driver_.check(driver_.cuGraphLaunch(static_cast<CUgraphExec>(graph), stream_), "cuGraphLaunch");
}

void CudaBackend::destroyGraph(void *graph) {
  driver_.cuGraphExecDestroy(static_cast<CUgraphExec>(graph));
}

} // namespace llmc::runtime
