// Golden tests: engines compiled from checkpoints that Hugging Face
// transformers created, run on the CPU backend and compared with
// transformers' own logits and greedy continuations (test/golden/README.md).
//
// LLMC_GOLDEN_CASES: test/golden/cases; LLMC_GOLDEN_ENGINES: one engine
// directory per case, compiled by llmc.

#include "runtime/backend/Backend.h"
#include "runtime/sched/Scheduler.h"
#include "runtime/serve/EngineLoop.h"
#include "runtime/engine/Scoring.h"
#include "runtime/support/Math.h"
#include "runtime/weights/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <thread>
#include <tuple>

namespace {

using namespace llmc;
namespace fs = std::filesystem;

std::string env(const char *name) {
  const char *value = std::getenv(name);
  return value ? value : "";
}

// Every tensor of expected.safetensors, widened to float or int32.
struct Expected {
  std::map<std::string, std::vector<float>> floats;
  std::map<std::string, std::vector<int32_t>> ints;
  std::map<std::string, std::vector<int64_t>> shapes;

  explicit Expected(const fs::path &path) {
    uint64_t dataStart = 0;
    std::vector<weights::TensorInfo> infos = weights::readHeader(path.string(), dataStart);
    std::ifstream file(path, std::ios::binary);
    for (const weights::TensorInfo &info : infos) {
      std::vector<char> bytes(info.numBytes());
      file.seekg(std::streamoff(dataStart + info.begin));
      file.read(bytes.data(), std::streamsize(bytes.size()));
      shapes[info.name] = info.shape;
      if (info.dtype == weights::DType::I32) {
        auto &v = ints[info.name];
        v.resize(bytes.size() / 4);
        std::memcpy(v.data(), bytes.data(), bytes.size());
      } else if (info.dtype == weights::DType::F32) {
        auto &v = floats[info.name];
        v.resize(bytes.size() / 4);
        std::memcpy(v.data(), bytes.data(), bytes.size());
      } else {
        ADD_FAILURE() << path << ": unexpected dtype of " << info.name;
      }
    }
  }
  size_t numPrompts() const {
    size_t n = 0;
    while (ints.count("prompt." + std::to_string(n)))
      ++n;
    return n;
  }
};

double relativeL2(const std::vector<float> &actual, const std::vector<float> &expected) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff += (double(actual[i]) - expected[i]) * (double(actual[i]) - expected[i]);
    norm += double(expected[i]) * expected[i];
  }
  return std::sqrt(diff / norm);
}

std::vector<std::string> caseNames() {
  std::vector<std::string> names;
  if (!env("LLMC_GOLDEN_CASES").empty())
    for (const auto &entry : fs::directory_iterator(env("LLMC_GOLDEN_CASES")))
      if (fs::exists(entry.path() / "expected.safetensors"))
        names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class Golden : public testing::TestWithParam<std::string> {
protected:
  void SetUp() override {
    caseDir = fs::path(env("LLMC_GOLDEN_CASES")) / GetParam();
    engineDir = fs::path(env("LLMC_GOLDEN_ENGINES")) / GetParam();
    plan = std::make_unique<plan::PlanFile>(plan::PlanFile::load(engineDir.string()));
    checkpoint = std::make_unique<weights::Checkpoint>(weights::Checkpoint::open(caseDir.string()));
    backend = runtime::createBackend("cpu");
    runtime::ExecutorOptions options;
    options.max_tokens_per_forward = 256;
    options.max_seqs_per_forward = 64;
    options.kv_pages = 256;
    executor = std::make_unique<runtime::Executor>(*plan, *backend, *checkpoint, caseDir.string(), options);
    pages = std::make_unique<runtime::BlockManager>(256);
    expected = std::make_unique<Expected>(caseDir / "expected.safetensors");
    bf16 = plan->plan().model()->dtype() == plan::DType::bf16;
    for (size_t i = 0; i < expected->numPrompts(); ++i)
      prompts.push_back(expected->ints.at("prompt." + std::to_string(i)));
  }

  // The greedy continuation a correct engine must reproduce: transformers'
  // own run in the model's dtype. bf16 runs hit near-ties (bf16 rounding of
  // the logits), so only the steps before the first margin under 0.05 are
  // certain; the generator keeps at least 16 of them (test/golden/README.md).
  std::vector<int32_t> expectedGreedy(size_t i) const {
    if (!bf16)
      return expected->ints.at("greedy." + std::to_string(i));
    std::vector<int32_t> tokens = expected->ints.at("greedy_bf16." + std::to_string(i));
    const auto &margins = expected->floats.at("greedy_bf16_margin." + std::to_string(i));
    size_t certain = 0;
    while (certain < margins.size() && margins[certain] >= 0.05f)
      ++certain;
    EXPECT_GE(certain, 16u) << "golden case has too short a certain bf16 prefix";
    tokens.resize(certain);
    return tokens;
  }

  static std::vector<int32_t> prefix(std::vector<int32_t> tokens, size_t length) {
    tokens.resize(std::min(tokens.size(), length));
    return tokens;
  }

  static runtime::GenerationRequest greedyRequest(std::vector<int32_t> prompt, int max_tokens) {
    runtime::GenerationRequest request;
    request.prompt = std::move(prompt);
    request.sampling.temperature = 0;
    request.max_tokens = max_tokens;
    request.ignore_eos = true;
    return request;
  }

  std::vector<std::vector<int32_t>> greedy(int64_t tokensPerForward, bool together) {
    std::vector<runtime::GenerationRequest> requests;
    for (const auto &prompt : prompts)
      requests.push_back(greedyRequest(prompt, 64));
    runtime::SchedulerOptions options;
    options.tokens_per_forward = tokensPerForward;
    std::vector<std::vector<int32_t>> tokens;
    auto run = [&](const std::vector<runtime::GenerationRequest> &batch) {
      for (auto &result : runtime::generate(*executor, *pages, batch, options))
        tokens.push_back(result.tokens);
    };
    if (together)
      run(requests);
    else
      for (const auto &request : requests)
        run({request});
    return tokens;
  }

  fs::path caseDir, engineDir;
  std::unique_ptr<plan::PlanFile> plan;
  std::unique_ptr<weights::Checkpoint> checkpoint;
  std::unique_ptr<runtime::Backend> backend;
  std::unique_ptr<runtime::Executor> executor;
  std::unique_ptr<runtime::BlockManager> pages;
  std::unique_ptr<Expected> expected;
  std::vector<std::vector<int32_t>> prompts;
  bool bf16 = false;
};

// fp32 checkpoints: within 1e-4 of transformers' fp32 forward. bf16
// checkpoints compute in bf16 like transformers does in that dtype; on these
// random weights transformers' own bf16 forward is 1.0-1.5% from its fp32
// forward, so ours must be no further from fp32 than that (x1.25) and within
// 1.5e-2 of transformers' bf16 forward.
TEST_P(Golden, TeacherForcedLogitsMatchTransformers) {
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto logits = runtime::teacherForcedLogits(*executor, *pages, {prompts[i]});
    const auto &fp32 = expected->floats.at("logits." + std::to_string(i));
    ASSERT_EQ(logits[0].size(), fp32.size());
    const double error = relativeL2(logits[0], fp32);
    std::cout << GetParam() << " prompt " << i << ": relative L2 error vs fp32 " << error;
    if (!bf16) {
      EXPECT_LE(error, 1e-4) << GetParam() << " prompt " << i;
    } else {
      const auto &reference = expected->floats.at("logits_bf16." + std::to_string(i));
      const double errorBf16 = relativeL2(logits[0], reference);
      const double transformersOwn = relativeL2(reference, fp32);
      std::cout << ", vs bf16 " << errorBf16 << " (transformers bf16 vs fp32: " << transformersOwn << ")";
      EXPECT_LE(errorBf16, 1.5e-2) << GetParam() << " prompt " << i;
      EXPECT_LE(error, 1.25 * transformersOwn) << GetParam() << " prompt " << i;
    }
    std::cout << "\n";
  }
  EXPECT_EQ(pages->numFree(), pages->numPages()) << "pages leaked";
}

// The CPU backend with its allocations counted, and a limit past which an
// allocation fails as a full device would.
class CountingBackend final : public runtime::Backend {
public:
  size_t allocations = 0, limit = SIZE_MAX;
  std::string_view name() const override { return "counting"; }
  void *allocate(size_t bytes) override {
    if (bytes > limit)
      throw std::runtime_error("out of device memory");
    ++allocations;
    return cpu_->allocate(bytes);
  }
  void release(void *pointer) override { cpu_->release(pointer); }
  void upload(void *device, const void *host, size_t bytes) override { cpu_->upload(device, host, bytes); }
  void download(void *host, const void *device, size_t bytes) override {
    synchronize();  // a device's download waits for everything queued before it
    cpu_->download(host, device, bytes);
  }
  void *allocateHost(size_t bytes) override { return cpu_->allocateHost(bytes); }
  void releaseHost(void *pointer) override { cpu_->releaseHost(pointer); }
  // As on a device, an asynchronous copy lands only at synchronize(): a
  // reader that does not wait for it sees stale bytes.
  void downloadAsync(void *host, const void *device, size_t bytes) override {
    pendingCopies.push_back({host, device, bytes});
  }
  // An asynchronous upload runs before the launches after it, so it lands at
  // once here; what a device would make of host bytes changed before
  // synchronize() is caught there.
  void uploadAsync(void *device, const void *host, size_t bytes) override {
    cpu_->upload(device, host, bytes);
    const auto *first = static_cast<const std::byte *>(host);
    pendingUploads.push_back({host, std::vector<std::byte>(first, first + bytes)});
  }
  void loadKernels(const plan::Plan &plan) override { cpu_->loadKernels(plan); }
  void launch(const plan::Plan &plan, int32_t kernel, std::span<void *const> buffers,
              std::span<const plan::Scalar> scalars, const runtime::BatchShape &batch) override {
    if (failLaunches)
      throw std::runtime_error("injected launch failure");
    launched.push_back(plan.kernels()->Get(uint32_t(kernel))->kernel_template()->str());
    cpu_->launch(plan, kernel, buffers, scalars, batch);
  }
  std::vector<std::string> launched;  // every launch()'s kernel template, in order
  std::atomic<bool> failLaunches{false};
  void gemm(const runtime::GemmArgs &args) override {
    gemms.push_back(args);
    cpu_->gemm(args);
  }
  void tuneGemms(std::span<const runtime::GemmArgs> calls) override { tuned.emplace_back(calls.begin(), calls.end()); }
  std::vector<runtime::GemmArgs> gemms;               // every gemm() call, in order
  std::vector<std::vector<runtime::GemmArgs>> tuned;  // every tuneGemms() list
  void sample(float *logits, int64_t rows, int64_t cols, const sample::RowSampling *params,
              const sample::LogitAdjustment *adjustments, sample::RowSample *out) override {
    cpu_->sample(logits, rows, cols, params, adjustments, out);
  }
  bool asynchronous() const override { return true; }  // its copies land late, as a device's
  void synchronize() override {
    for (const PendingCopy &copy : pendingCopies)
      cpu_->download(copy.host, copy.device, copy.bytes);
    pendingCopies.clear();
    for (const PendingUpload &upload : pendingUploads)
      if (std::memcmp(upload.host, upload.bytes.data(), upload.bytes.size()) != 0)
        throw std::logic_error("the host bytes of an asynchronous upload changed before synchronize()");
    pendingUploads.clear();
  }
  struct PendingCopy {
    void *host;
    const void *device;
    size_t bytes;
  };
  std::vector<PendingCopy> pendingCopies;
  struct PendingUpload {
    const void *host;
    std::vector<std::byte> bytes;  // as they were when the upload was queued
  };
  std::vector<PendingUpload> pendingUploads;

private:
  std::unique_ptr<runtime::Backend> cpu_ = runtime::createBackend("cpu");
};

// Limits small enough for an executor on a CountingBackend: 64 tokens and 4
// sequences a forward, 16 KV pages.
runtime::ExecutorOptions smallLimits() {
  runtime::ExecutorOptions options;
  options.max_tokens_per_forward = 64;
  options.max_seqs_per_forward = 4;
  options.kv_pages = 16;
  return options;
}

// The executor takes its device memory in one reservation at start-up; only
// penalised rows' logit adjustments allocate later. A device too small for
// the reservation fails before any weight loads, naming what it needed.
TEST_P(Golden, DeviceMemoryIsOneReservation) {
  CountingBackend counting;
  const runtime::ExecutorOptions options = smallLimits();
  runtime::Executor one(*plan, counting, *checkpoint, caseDir.string(), options);
  EXPECT_EQ(counting.allocations, 1u);
  EXPECT_GE(one.reservedBytes(), size_t(plan::parameterBytes(*plan->plan().ranks()->Get(0))));

  std::vector<int32_t> table{0};
  runtime::ForwardBatch batch;
  batch.addChunk({prompts[0].data(), 4}, 0, table, one.pageSize());
  const sample::LogitAdjustment penalty{int32_t(prompts[0][0]), 1.3f, 0.0f};
  sample::RowSampling row{};
  row.num_adjustments = 1;
  std::vector<sample::RowSample> results;
  one.forwardSample(batch, {&row, 1}, {&penalty, 1}, results);
  one.forwardSample(batch, {&row, 1}, {&penalty, 1}, results);
  EXPECT_EQ(counting.allocations, 2u);  // the adjustments, once

  counting.limit = one.reservedBytes() - 1;
  try {
    runtime::Executor tooBig(*plan, counting, *checkpoint, caseDir.string(), options);
    FAIL() << "no error from a device without room for the reservation";
  } catch (const std::runtime_error &error) {
    EXPECT_NE(std::string(error.what()).find("the engine needs"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("out of device memory"), std::string::npos) << error.what();
  }
}

// launchSample() returns with the results still on their way (the backend
// copies them at synchronize()); collectSamples() waits for them and gives
// what forwardSample() gives. One forward at a time: a second launch, a
// forward() or a collect with nothing launched is a logic error, and the
// executor works on after it.
TEST_P(Golden, LaunchedSamplesArriveAtCollect) {
  CountingBackend counting;
  runtime::Executor executor(*plan, counting, *checkpoint, caseDir.string(), smallLimits());
  std::vector<int32_t> tables[2] = {{0}, {1}};
  runtime::ForwardBatch batch;
  for (int s = 0; s < 2; ++s)
    batch.addChunk({prompts[size_t(s)].data(), 4}, 0, tables[s], executor.pageSize());
  sample::RowSampling rows[2]{};
  rows[0].logprobs = 3;
  std::vector<sample::RowSample> expected, results;
  executor.forwardSample(batch, rows, {}, expected);
  ASSERT_EQ(expected.size(), 2u);

  executor.launchSample(batch, rows, {});
  EXPECT_TRUE(executor.sampling());
  EXPECT_EQ(counting.pendingCopies.size(), 1u);  // not read back yet
  std::vector<float> logits;
  EXPECT_THROW(executor.forward(batch, logits), std::logic_error);
  EXPECT_THROW(executor.launchSample(batch, rows, {}), std::logic_error);
  executor.collectSamples(results);
  EXPECT_FALSE(executor.sampling());
  EXPECT_TRUE(counting.pendingCopies.empty());
  ASSERT_EQ(results.size(), expected.size());
  for (size_t s = 0; s < results.size(); ++s) {
    EXPECT_EQ(results[s].token, expected[s].token) << s;
    EXPECT_EQ(results[s].logprob, expected[s].logprob) << s;
    ASSERT_EQ(results[s].num_top, expected[s].num_top) << s;
    for (int i = 0; i < results[s].num_top; ++i)
      EXPECT_EQ(results[s].top_tokens[i], expected[s].top_tokens[i]) << s << " " << i;
  }
  EXPECT_GT(results[0].num_top, 0);
  EXPECT_THROW(executor.collectSamples(results), std::logic_error);
  executor.forward(batch, logits);  // usable again
  EXPECT_EQ(logits.size(), size_t(2 * executor.vocabSize()));
}

// At start-up the executor hands the backend, for each decode size, exactly
// the GEMMs a decode forward of that size makes, so the kernels the backend
// picks are picked on those calls; then those of a forward of the whole
// token budget.
TEST_P(Golden, GemmsAreTunedPerDecodeSizeAndForTheTokenBudget) {
  CountingBackend counting;
  const runtime::ExecutorOptions options = smallLimits();
  runtime::Executor executor(*plan, counting, *checkpoint, caseDir.string(), options);
  const std::vector<int64_t> sizes = runtime::decodeGraphSizes(options.max_seqs_per_forward);
  ASSERT_EQ(counting.tuned.size(), sizes.size() + 1);
  ASSERT_TRUE(counting.gemms.empty());  // tuning runs nothing itself on this backend
  ASSERT_FALSE(counting.tuned.back().empty());
  for (const runtime::GemmArgs &g : counting.tuned.back())  // rows are tokens, or sequences for the logits
    EXPECT_TRUE(g.rows == options.max_tokens_per_forward || g.rows == options.max_seqs_per_forward) << g.rows;
  EXPECT_TRUE(std::any_of(counting.tuned.back().begin(), counting.tuned.back().end(),
                          [&](const runtime::GemmArgs &g) { return g.rows == options.max_tokens_per_forward; }));

  // A decode forward of two sequences (one token each).
  std::vector<int32_t> tables[2] = {{0}, {1}};
  runtime::ForwardBatch batch;
  for (int s = 0; s < 2; ++s)
    batch.addChunk({&prompts[0][size_t(s)], 1}, 0, tables[s], executor.pageSize());
  std::vector<int32_t> tokens;
  executor.forwardGreedy(batch, tokens);
  const std::vector<runtime::GemmArgs> &tuned = counting.tuned[1];  // size 2
  ASSERT_EQ(sizes[1], 2);
  ASSERT_EQ(counting.gemms.size(), tuned.size());
  ASSERT_FALSE(tuned.empty());
  for (size_t i = 0; i < tuned.size(); ++i) {
    const runtime::GemmArgs &a = tuned[i], &b = counting.gemms[i];
    EXPECT_EQ(a.rows, 2);
    EXPECT_EQ(std::tie(a.input, a.weight, a.bias, a.out, a.rows, a.n, a.k, a.input_dtype, a.out_dtype),
              std::tie(b.input, b.weight, b.bias, b.out, b.rows, b.n, b.k, b.input_dtype, b.out_dtype))
        << "GEMM " << i;
  }
}

// For profiling, omitSteps() leaves the named kinds of step out of later
// forwards, which then compute something else; an empty set brings them
// back, with the first forward's logits.
TEST_P(Golden, OmittedStepsAreLeftOutUntilRestored) {
  CountingBackend counting;
  runtime::Executor executor(*plan, counting, *checkpoint, caseDir.string(), smallLimits());
  std::vector<int32_t> table{0};
  runtime::ForwardBatch batch;
  batch.addChunk({prompts[0].data(), 4}, 0, table, executor.pageSize());
  std::vector<float> full, withoutSilu, restored;
  auto run = [&](std::vector<float> &logits) {
    counting.launched.clear();
    counting.gemms.clear();
    executor.forward(batch, logits);
  };
  run(full);
  const std::vector<std::string> allLaunches = counting.launched;
  const size_t allGemms = counting.gemms.size();
  const auto silus = std::count(allLaunches.begin(), allLaunches.end(), "silu_mul");
  ASSERT_GT(silus, 0);

  executor.omitSteps({"silu_mul"});
  run(withoutSilu);
  EXPECT_EQ(std::count(counting.launched.begin(), counting.launched.end(), "silu_mul"), 0);
  EXPECT_EQ(counting.launched.size(), allLaunches.size() - size_t(silus));
  EXPECT_EQ(counting.gemms.size(), allGemms);
  EXPECT_GT(relativeL2(withoutSilu, full), 1e-3);

  executor.omitSteps({"gemm"});
  run(withoutSilu);
  EXPECT_TRUE(counting.gemms.empty());
  EXPECT_EQ(counting.launched, allLaunches);

  executor.omitSteps({});
  run(restored);
  EXPECT_EQ(counting.launched, allLaunches);
  EXPECT_EQ(counting.gemms.size(), allGemms);
  EXPECT_EQ(restored, full);
}

// forwardSample picks from the forward's own logits: a greedy row with top
// logprobs, a row whose best token is banned by an adjustment; rows that do
// not fit the batch are BatchErrors before anything runs.
TEST_P(Golden, SamplingRowsFollowTheForwardsLogits) {
  const std::vector<int32_t> &prompt = prompts[0];
  std::vector<int32_t> table;
  for (int64_t p = 0; p < ceilDiv(int64_t(prompt.size()), executor->pageSize()); ++p)
    table.push_back(*pages->allocate());
  runtime::ForwardBatch batch;
  batch.addChunk(prompt, 0, table, executor->pageSize());
  std::vector<float> logits;
  executor->forward(batch, logits);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  double sum = 0;
  for (float v : logits)
    sum += std::exp(double(v) - logits[order[0]]);
  auto logprob = [&](int32_t t) { return double(logits[t]) - logits[order[0]] - std::log(sum); };

  sample::RowSampling greedy{};
  greedy.logprobs = 5;
  std::vector<sample::RowSample> results;
  executor->forwardSample(batch, {&greedy, 1}, {}, results);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].token, order[0]);
  EXPECT_NEAR(results[0].logprob, logprob(order[0]), 1e-5);
  ASSERT_EQ(results[0].num_top, 5);
  for (int k = 0; k < 5; ++k) {
    EXPECT_EQ(results[0].top_tokens[k], order[size_t(k)]);
    EXPECT_NEAR(results[0].top_logprobs[k], logprob(order[size_t(k)]), 1e-5);
  }

  const sample::LogitAdjustment ban{order[0], 1.0f, std::numeric_limits<float>::infinity()};
  sample::RowSampling banned{};
  banned.num_adjustments = 1;
  executor->forwardSample(batch, {&banned, 1}, {&ban, 1}, results);
  EXPECT_EQ(results[0].token, order[1]);

  sample::RowSampling two[2] = {};
  EXPECT_THROW(executor->forwardSample(batch, two, {}, results), runtime::BatchError);
  sample::RowSampling tooMany{};
  tooMany.logprobs = sample::kMaxTopLogprobs + 1;
  EXPECT_THROW(executor->forwardSample(batch, {&tooMany, 1}, {}, results), runtime::BatchError);
  sample::RowSampling pastTheEnd{};
  pastTheEnd.num_adjustments = 2;
  EXPECT_THROW(executor->forwardSample(batch, {&pastTheEnd, 1}, {&ban, 1}, results), runtime::BatchError);
  sample::RowSampling noTemperature{};
  noTemperature.temperature = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(executor->forwardSample(batch, {&noTemperature, 1}, {}, results), runtime::BatchError);
  sample::RowSampling keepsNothing{};
  keepsNothing.min_p = 1.5f;  // would drop even the best token
  EXPECT_THROW(executor->forwardSample(batch, {&keepsNothing, 1}, {}, results), runtime::BatchError);
  const sample::LogitAdjustment twice[] = {ban, ban};  // two threads would write one logit
  sample::RowSampling duplicated{};
  duplicated.num_adjustments = 2;
  EXPECT_THROW(executor->forwardSample(batch, {&duplicated, 1}, twice, results), runtime::BatchError);
  for (int32_t page : table)
    pages->release(page);
}

// A sequence whose pages describe a KV length beyond the engine's maximum is
// a BatchError, even where the batch's page count fits: padded to a decode
// graph's size, such a batch would hold more pages than the input block.
TEST_P(Golden, KvLengthBeyondTheMaximumIsRejected) {
  const int32_t page = *pages->allocate();
  runtime::ForwardBatch batch;
  const int32_t token = prompts[0][0];
  batch.addChunk({&token, 1}, 0, {&page, 1}, executor->pageSize());
  std::vector<int32_t> tokens;
  executor->forwardGreedy(batch, tokens);  // valid as built
  const int64_t pagesPastTheMaximum = ceilDiv(executor->maxSeqLen(), int64_t(executor->pageSize())) + 1;
  batch.kv_page_indices.assign(size_t(pagesPastTheMaximum), page);
  batch.kv_indptr[1] = int32_t(pagesPastTheMaximum);
  EXPECT_THROW(executor->forwardGreedy(batch, tokens), runtime::BatchError);
  pages->release(page);
}

TEST_P(Golden, RaggedAndChunkedLogitsEqualSingleRuns) {
  std::vector<std::vector<float>> single;
  for (const auto &prompt : prompts)
    single.push_back(runtime::teacherForcedLogits(*executor, *pages, {prompt})[0]);
  auto ragged = runtime::teacherForcedLogits(*executor, *pages, prompts);
  auto chunked = runtime::teacherForcedLogits(*executor, *pages, prompts, 7);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_LE(relativeL2(ragged[i], single[i]), 1e-6) << "ragged, prompt " << i;
    EXPECT_LE(relativeL2(chunked[i], single[i]), 1e-6) << "chunked, prompt " << i;
  }
}

// A whole prompt as one multi-token prefill (all prompts in one ragged
// batch), and the same prompts in chunks over several forwards: the logits of
// each prompt's last position match transformers (prefill attention over
// several query rows, not only one-token rows as in the test above).
TEST_P(Golden, PrefillLogitsMatchTransformers) {
  const double tolerance = bf16 ? 2e-2 : 1e-4;
  const size_t vocab = size_t(executor->vocabSize());
  auto lastRow = [&](size_t i) {
    const auto &all = expected->floats.at("logits." + std::to_string(i));
    return std::vector<float>(all.end() - long(vocab), all.end());
  };
  std::vector<std::vector<int32_t>> tables;
  for (const auto &prompt : prompts) {
    tables.emplace_back();
    for (size_t p = 0; p < (prompt.size() + 15) / 16; ++p)
      tables.back().push_back(*pages->allocate());
  }
  const int32_t pageSize = executor->pageSize();
  std::vector<float> logits;
  runtime::ForwardBatch together;
  for (size_t i = 0; i < prompts.size(); ++i)
    together.addChunk(prompts[i], 0, tables[i], pageSize);
  executor->forward(together, logits);
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<float> row(logits.begin() + long(i * vocab), logits.begin() + long((i + 1) * vocab));
    EXPECT_LE(relativeL2(row, lastRow(i)), tolerance) << "ragged prefill, prompt " << i;
  }
  // Chunks of 7 tokens per sequence per forward, all sequences together.
  std::vector<size_t> done(prompts.size(), 0);
  std::vector<std::vector<float>> last(prompts.size());
  for (bool more = true; more;) {
    runtime::ForwardBatch chunk;
    std::vector<size_t> members;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (done[i] == prompts[i].size())
        continue;
      const size_t n = std::min<size_t>(7, prompts[i].size() - done[i]);
      chunk.addChunk({prompts[i].data() + done[i], n}, int32_t(done[i]), tables[i], pageSize);
      done[i] += n;
      members.push_back(i);
    }
    more = !members.empty();
    if (!more)
      break;
    executor->forward(chunk, logits);
    for (size_t s = 0; s < members.size(); ++s)
      last[members[s]].assign(logits.begin() + long(s * vocab), logits.begin() + long((s + 1) * vocab));
  }
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_LE(relativeL2(last[i], lastRow(i)), tolerance) << "chunked prefill, prompt " << i;
  for (const auto &table : tables)
    for (int32_t page : table)
      pages->release(page);
}

TEST_P(Golden, GreedyContinuationsMatchTransformers) {
  auto together = greedy(0, true);
  auto alone = greedy(0, false);
  auto chunked = greedy(16, true);  // prompts over several forwards, mixed with decodes
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t> expectedTokens = expectedGreedy(i);
    const size_t n = expectedTokens.size();
    EXPECT_EQ(prefix(together[i], n), expectedTokens) << "ragged batch, prompt " << i;
    EXPECT_EQ(prefix(alone[i], n), expectedTokens) << "alone, prompt " << i;
    EXPECT_EQ(prefix(chunked[i], n), expectedTokens) << "chunked prefill, prompt " << i;
    // Batching and chunking change nothing on the CPU backend, to the last token.
    EXPECT_EQ(together[i], alone[i]) << "prompt " << i;
    EXPECT_EQ(chunked[i], alone[i]) << "prompt " << i;
  }
  EXPECT_EQ(pages->numFree(), pages->numPages()) << "pages leaked";
}

// A KV cache that holds two sequences at a time: the newest running ones are
// preempted and recomputed later (from their own cached pages, or with
// prefix caching off from scratch), and every continuation is still the one
// transformers produced.
TEST_P(Golden, GreedyUnderPreemptionMatchesTransformers) {
  size_t longest = 0;
  for (const auto &prompt : prompts)
    longest = std::max(longest, prompt.size() + 64);
  const int32_t pagesPerSequence = int32_t((longest + 15) / 16);
  for (bool caching : {true, false}) {
    runtime::BlockManager small(2 * pagesPerSequence);
    runtime::SchedulerOptions options;
    options.prefix_caching = caching;
    runtime::Scheduler scheduler(*executor, small, options);
    for (const auto &prompt : prompts)
      scheduler.add(greedyRequest(prompt, 64));
    std::vector<std::vector<int32_t>> tokens(prompts.size());
    while (!scheduler.idle())
      for (const runtime::SequenceUpdate &update : scheduler.step()) {
        ASSERT_TRUE(update.sample) << update.error;
        tokens[update.id].push_back(update.sample->token);
      }
    EXPECT_GT(scheduler.counters().preemptions, 0) << "the cache was large enough for all";
    for (size_t i = 0; i < prompts.size(); ++i)
      EXPECT_EQ(prefix(tokens[i], expectedGreedy(i).size()), expectedGreedy(i))
          << "prompt " << i << (caching ? ", prefix caching on" : ", prefix caching off");
    EXPECT_EQ(small.numFree(), small.numPages()) << "pages leaked";
  }
}

// A prompt that extends an earlier request's (its prompt plus the first half
// of its continuation) starts from the earlier request's cached pages and
// goes on with the rest of transformers' continuation.
TEST_P(Golden, PrefixCacheServesTheSharedPrefix) {
  runtime::SchedulerOptions options;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t> expectedTokens = expectedGreedy(i);
    const size_t half = expectedTokens.size() / 2;
    runtime::generate(*executor, *pages, {greedyRequest(prompts[i], int(half))}, options);
    std::vector<int32_t> extended = prompts[i];
    extended.insert(extended.end(), expectedTokens.begin(), expectedTokens.begin() + long(half));
    auto results = runtime::generate(
        *executor, *pages, {greedyRequest(extended, int(expectedTokens.size() - half))}, options);
    // The first request computed the KV of its prompt and all but its last token.
    const int64_t computedBefore = int64_t(prompts[i].size() + half - 1);
    EXPECT_EQ(results[0].cached_tokens, computedBefore / 16 * 16) << "prompt " << i;
    EXPECT_EQ(results[0].tokens,
              std::vector<int32_t>(expectedTokens.begin() + long(half), expectedTokens.end()))
        << "prompt " << i;
  }
  EXPECT_GT(pages->numCached(), 0);
  EXPECT_EQ(pages->numFree(), pages->numPages()) << "pages leaked";
}

// Three requests for the same prompt at once (n > 1, or one prefix arriving
// in several requests): the first computes the prompt, the others wait a
// forward for its pages and compute only the part after its last full page;
// all three continue as transformers did.
TEST_P(Golden, EqualPromptsAtOnceComputeTheSharedPagesOnce) {
  size_t served = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t> expectedTokens = expectedGreedy(i);
    const size_t half = expectedTokens.size() / 2;
    std::vector<int32_t> prompt = prompts[i];
    prompt.insert(prompt.end(), expectedTokens.begin(), expectedTokens.begin() + long(half));
    const int64_t shared = int64_t(prompt.size() - 1) / 16 * 16;  // the last token is computed anyway
    if (shared == 0)
      continue;  // no full page to share
    ++served;
    runtime::BlockManager fresh(pages->numPages());
    runtime::SchedulerOptions options;
    runtime::Scheduler scheduler(*executor, fresh, options);
    const int maxTokens = int(expectedTokens.size() - half);
    for (int copy = 0; copy < 3; ++copy)
      scheduler.add(greedyRequest(prompt, maxTokens));
    std::vector<std::vector<int32_t>> tokens(3);
    std::vector<int64_t> cached(3, -1);
    while (!scheduler.idle())
      for (const runtime::SequenceUpdate &update : scheduler.step()) {
        ASSERT_TRUE(update.sample) << update.error;
        tokens[update.id].push_back(update.sample->token);
        cached[update.id] = update.cached_tokens;
      }
    const std::vector<int32_t> rest(expectedTokens.begin() + long(half), expectedTokens.end());
    for (size_t copy = 0; copy < 3; ++copy)
      EXPECT_EQ(tokens[copy], rest) << "prompt " << i << ", copy " << copy;
    EXPECT_EQ(cached, (std::vector<int64_t>{0, shared, shared})) << "prompt " << i;
    const runtime::SchedulerCounters &counters = scheduler.counters();
    EXPECT_EQ(counters.cached_prompt_tokens, 2 * shared) << "prompt " << i;
    // Prompts once in full, twice past the shared pages; then one token a step.
    EXPECT_EQ(counters.computed_tokens,
              int64_t(prompt.size()) * 3 - 2 * shared + 3 * int64_t(maxTokens - 1))
        << "prompt " << i;
    EXPECT_EQ(fresh.numFree(), fresh.numPages()) << "pages leaked";
  }
  EXPECT_GT(served, 0u) << "no prompt of this case fills a page";
}

// A scheduler driven in halves (launch(), host work, complete()) gives
// transformers' continuations; requests added while a forward is in flight
// join later forwards; launch(), complete() and abort() out of turn are
// logic errors that change nothing; a scheduler destroyed with a forward in
// flight waits for it and gives its pages back.
TEST_P(Golden, SchedulerStepsInHalves) {
  runtime::BlockManager fresh(pages->numPages());
  {
    runtime::Scheduler scheduler(*executor, fresh, runtime::SchedulerOptions{});
    EXPECT_THROW(scheduler.complete(), std::logic_error);
    scheduler.add(greedyRequest(prompts[0], 64));
    size_t added = 1;
    std::vector<std::vector<int32_t>> tokens(prompts.size());
    while (!scheduler.idle()) {
      ASSERT_TRUE(scheduler.launch());
      EXPECT_TRUE(scheduler.inFlight());
      EXPECT_THROW(scheduler.launch(), std::logic_error);
      EXPECT_THROW(scheduler.abort(0), std::logic_error);
      if (added < prompts.size())
        scheduler.add(greedyRequest(prompts[added++], 64));
      for (const runtime::SequenceUpdate &update : scheduler.complete()) {
        ASSERT_TRUE(update.sample) << update.error;
        tokens[update.id].push_back(update.sample->token);
      }
    }
    EXPECT_FALSE(scheduler.inFlight());
    for (size_t i = 0; i < prompts.size(); ++i)
      EXPECT_EQ(prefix(tokens[i], expectedGreedy(i).size()), expectedGreedy(i)) << "prompt " << i;
  }
  {
    runtime::Scheduler dropped(*executor, fresh, runtime::SchedulerOptions{});
    dropped.add(greedyRequest(prompts[0], 4));
    ASSERT_TRUE(dropped.launch());
  }
  EXPECT_FALSE(executor->sampling());
  EXPECT_EQ(fresh.numFree(), fresh.numPages()) << "pages leaked";
}

// The serving loop (which hands out a forward's updates while the next one
// runs): requests get transformers' tokens; a forward that fails ends its
// request with an error, and the loop serves the next request as before.
TEST_P(Golden, EngineLoopSurvivesAFailedForward) {
  CountingBackend counting;
  runtime::Executor executor(*plan, counting, *checkpoint, caseDir.string(), smallLimits());
  runtime::BlockManager fresh(int32_t(executor.numPages()));
  runtime::Scheduler scheduler(executor, fresh, runtime::SchedulerOptions{});
  serve::EngineLoop loop(scheduler, fresh, 8);
  // The loop stops when the test ends, also when an assertion ends it early.
  struct Running {
    serve::EngineLoop &loop;
    std::thread thread;
    ~Running() {
      loop.stop();
      thread.join();
    }
  };
  std::unique_ptr<Running> running(new Running{loop, std::thread([&] { loop.run(); })});
  // Every update of each request of one group, in arrival order.
  auto serve = [&](std::vector<runtime::GenerationRequest> requests) {
    std::vector<std::vector<runtime::SequenceUpdate>> updates(requests.size());
    std::shared_ptr<serve::Channel> channel = loop.submit(std::move(requests), executor);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!channel->finished()) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "the requests did not finish within 20 s";
        break;
      }
      for (serve::Channel::Item &item : channel->take(std::chrono::milliseconds(100)))
        updates[item.index].push_back(std::move(item.update));
    }
    return updates;
  };
  auto expectTransformers = [&](const std::vector<runtime::SequenceUpdate> &updates, size_t i) {
    ASSERT_EQ(updates.size(), 8u) << "prompt " << i;
    std::vector<int32_t> tokens;
    for (const runtime::SequenceUpdate &update : updates) {
      ASSERT_TRUE(update.sample) << update.error;
      tokens.push_back(update.sample->token);
    }
    EXPECT_EQ(updates.back().finish_reason, "length");
    const size_t n = std::min<size_t>(8, expectedGreedy(i).size());
    EXPECT_EQ(prefix(tokens, n), prefix(expectedGreedy(i), n)) << "prompt " << i;
  };

  auto first = serve({greedyRequest(prompts[0], 8), greedyRequest(prompts[1], 8)});
  expectTransformers(first[0], 0);
  expectTransformers(first[1], 1);
  counting.failLaunches = true;
  auto failed = serve({greedyRequest(prompts[2], 8)});
  ASSERT_EQ(failed[0].size(), 1u);
  EXPECT_TRUE(failed[0][0].finished);
  EXPECT_EQ(failed[0][0].finish_reason, "error");
  EXPECT_NE(failed[0][0].error.find("the forward failed: injected launch failure"), std::string::npos)
      << failed[0][0].error;
  counting.failLaunches = false;
  auto again = serve({greedyRequest(prompts[2], 8)});
  expectTransformers(again[0], 2);

  running.reset();
  EXPECT_EQ(fresh.numFree(), fresh.numPages()) << "pages leaked";
}

INSTANTIATE_TEST_SUITE_P(Cases, Golden, testing::ValuesIn(caseNames()),
                         [](const auto &info) { return info.param; });

TEST(GoldenCases, Present) {
  EXPECT_FALSE(caseNames().empty()) << "no golden cases in LLMC_GOLDEN_CASES='"
                                    << env("LLMC_GOLDEN_CASES") << "'";
}

} // namespace
