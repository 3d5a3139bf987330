// llmrun bench: decode and prefill throughput on the CUDA backend, each
// figure next to the limit measured in the same run (read bandwidth for
// memory-bound decode steps, cuBLASLt's large-GEMM rate for prefill), and
// cold-start times split into plan load, JIT (empty and warm cache) and
// weight load. Times are medians of CUDA-event-timed repeats.

#include "tools/llmrun/bench.h"

#include <stdexcept>

namespace llmc {
namespace {

// Before any device work, and in builds without CUDA too.
void checkOptions(const BenchOptions &o) {
  if (o.repeats < 1)
    throw std::invalid_argument("--repeats must be at least 1");
  for (int64_t value : o.batches)
    if (value < 1)
      throw std::invalid_argument("--batch-sizes must be positive");
  for (int64_t value : o.contexts)
    if (value < 1)
      throw std::invalid_argument("--contexts must be positive");
  if (o.kv_cache_tokens < 0)
    throw std::invalid_argument("--kv-cache-tokens must not be negative");
}

} // namespace
} // namespace llmc

#ifdef LLMC_HAVE_CUDA

#include "runtime/backend/cuda/Probes.h"
#include "runtime/engine/Executor.h"
#include "runtime/jit/KernelCache.h"
#include "runtime/kv/BlockManager.h"
#include "runtime/support/Math.h"
#include "runtime/weights/safetensors.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <tuple>

namespace llmc {
namespace {

using Clock = std::chrono::steady_clock;

double millisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Bytes of weights one decode step reads in full: every parameter except an
// embedding table that only the embedding lookup uses (it reads B rows).
int64_t weightBytesReadPerStep(const plan::Plan &p) {
  const plan::RankProgram &rank = *p.ranks()->Get(0);
  std::set<int32_t> readInFull;
  for (const plan::Step *step : *rank.steps()) {
    if (const plan::Gemm *gemm = step->op_as_Gemm()) {
      readInFull.insert(gemm->weight());
      if (gemm->bias() >= 0)
        readInFull.insert(gemm->bias());
    } else if (const plan::Launch *launch = step->op_as_Launch()) {
      if (p.kernels()->Get(uint32_t(launch->kernel()))->kernel_template()->string_view() == "embedding")
        continue;
      for (int32_t buffer : *launch->buffers())
        readInFull.insert(buffer);
    }
  }
  int64_t bytes = 0;
  for (int32_t index : readInFull) {
    const plan::Buffer &buffer = *rank.buffers()->Get(uint32_t(index));
    if (buffer.kind() != plan::BufferKind::parameter)
      continue;
    const plan::Parameter &param = *rank.parameters()->Get(uint32_t(buffer.index()));
    int64_t elements = 1;
    for (int64_t dim : *param.shape())
      elements *= dim;
    bytes += elements * plan::dtypeBytes(param.dtype());
  }
  return bytes;
}

int64_t parameterBytes(const plan::Plan &p) { return plan::parameterBytes(*p.ranks()->Get(0)); }

// Sequences with their pages, grown one token at a time by decode steps.
struct Sequences {
  runtime::BlockManager &pages;
  int32_t pageSize;
  std::vector<std::vector<int32_t>> tokens, tables;

  void add(std::vector<int32_t> prompt, int64_t capacity) {
    tables.emplace_back();
    for (int64_t p = 0; p < ceilDiv(capacity, pageSize); ++p)
      tables.back().push_back(*pages.allocate());
    tokens.push_back(std::move(prompt));
  }
  ~Sequences() {
    for (auto &table : tables)
      for (int32_t page : table)
        pages.release(page);
  }
};

std::string formatMs(double ms, int decimals) {
  char text[32];
  std::snprintf(text, sizeof text, "%.*f", decimals, ms);
  return text;
}

std::vector<int32_t> randomTokens(std::mt19937 &engine, int64_t count, int64_t vocab) {
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (int32_t &token : tokens)
    token = int32_t(engine() % uint32_t(vocab));
  return tokens;
}

// A temporary JIT cache directory, removed however the benchmark ends.
struct TemporaryDirectory {
  std::string path;
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

// Where a forward's time goes: its steps launched one by one (no graph)
// with an event after each, several forwards back to back so that the host
// runs ahead and the intervals are GPU time (each launch's own latency
// included, which a graph partly hides). Medians over the later forwards,
// summed by kernel (GEMMs by shape and the kernel picked for it). `title`
// heads the table.
std::string stepBreakdown(runtime::CudaBackend &backend, runtime::Executor &executor, const plan::Plan &p,
                          const runtime::ForwardBatch &step, const std::string &title) {
  const plan::RankProgram &rank = *p.ranks()->Get(0);
  const size_t steps = rank.steps()->size();
  constexpr int kForwards = 5;  // the first one runs while the host is not yet ahead
  runtime::cuda::EventTimeline timeline(backend, kForwards * steps + 1);
  timeline.mark();
  executor.launchStepsRepeatedly(step, kForwards, [&](size_t) { timeline.mark(); });
  const std::vector<double> intervals = timeline.intervalsMs();
  std::vector<std::string> order;
  std::map<std::string, std::pair<int, double>> byLabel;  // launches per forward, median ms
  double total = 0;
  for (size_t i = 0; i < steps; ++i) {
    std::vector<double> times;
    for (int f = 1; f < kForwards; ++f)
      times.push_back(intervals[size_t(f) * steps + i]);
    std::sort(times.begin(), times.end());
    const double ms = times[times.size() / 2];
    std::string label(executor.stepKind(i));
    if (const plan::Gemm *gemm = rank.steps()->Get(uint32_t(i))->op_as_Gemm()) {
      const bool gemv = backend.chosenKernel(executor.gemmArgs(*gemm, {step.numTokens(), step.numSeqs()})) ==
                        runtime::CudaBackend::GemmKernel::gemv;
      label = "GEMM " + std::to_string(gemm->n()) + " x " + std::to_string(gemm->k()) +
              (gemv ? " (GEMV)" : " (cuBLASLt)");
    }
    if (!byLabel.count(label))
      order.push_back(label);
    byLabel[label].first += 1;
    byLabel[label].second += ms;
    total += ms;
  }
  std::string table = "\n| " + title + " | launches | ms | share |\n| --- | --- | --- | --- |\n";
  char line[256];
  for (const std::string &label : order) {
    std::snprintf(line, sizeof line, "| %s | %d | %.3f | %.1f%% |\n", label.c_str(), byLabel[label].first,
                  byLabel[label].second, 100.0 * byLabel[label].second / total);
    table += line;
  }
  std::snprintf(line, sizeof line, "| total | %zu | %.3f | 100%% |\n", steps, total);
  return table + line;
}

} // namespace

int runBench(const BenchOptions &o) {
  checkOptions(o);
  auto start = Clock::now();
  plan::PlanFile file = plan::PlanFile::load(o.engine);
  const double planMs = millisecondsSince(start);
  const plan::Plan &p = file.plan();

  start = Clock::now();
  runtime::CudaBackend backend;
  const double backendMs = millisecondsSince(start);
  backend.setDependentLaunches(o.dependent_launch);
  if (o.gemm != "tuned")
    backend.setGemmOverride(o.gemm == "gemv" ? runtime::CudaBackend::GemmKernel::gemv
                                             : runtime::CudaBackend::GemmKernel::cublasLt);
  const TemporaryDirectory cache{(std::filesystem::temp_directory_path() /
                                 ("llmc-bench-jit-" + std::to_string(getpid()))).string()};
  const std::string &cacheDir = cache.path;
  std::filesystem::remove_all(cacheDir);
  start = Clock::now();
  jit::compileModules(p, backend.arch(), cacheDir);
  const double jitColdMs = millisecondsSince(start);
  start = Clock::now();
  jit::compileModules(p, backend.arch(), cacheDir);
  const double jitWarmMs = millisecondsSince(start);
  setenv("LLMC_CACHE_DIR", cacheDir.c_str(), 1);

  // KV pages as asked, or from what is left after weights and workspace
  // (and 2 GiB for the probes and cuBLASLt).
  const plan::KvCacheSpec &kv = *p.kv_cache();
  const int64_t kvBytesPerToken = plan::kvBytesPerToken(p);
  runtime::ExecutorOptions options;
  options.kv_pages = o.kv_cache_tokens > 0
                         ? ceilDiv(o.kv_cache_tokens, int64_t(kv.page_size()))
                         : runtime::kvPagesForMemory(p, *backend.freeMemory(), o.memory_fraction, int64_t(2) << 30);

  start = Clock::now();
  std::unique_ptr<weights::Checkpoint> checkpoint;
  std::unique_ptr<runtime::Executor> executor;
  if (o.weights.empty()) {
    executor = std::make_unique<runtime::Executor>(file, backend, 1234, options);
  } else {
    checkpoint = std::make_unique<weights::Checkpoint>(weights::Checkpoint::open(o.weights));
    executor = std::make_unique<runtime::Executor>(file, backend, *checkpoint, o.weights, options);
  }
  backend.synchronize();
  const double loadMs = millisecondsSince(start);
  const double captureMs = executor->graphCaptureSeconds() * 1e3;
  const double tuningMs = executor->gemmTuningSeconds() * 1e3;

  // The first token: one 16-token prompt, right after the load.
  runtime::BlockManager pages(int32_t(options.kv_pages));
  std::mt19937 engine(42);
  const int64_t vocab = p.model()->vocab_size();
  std::vector<int32_t> firstTokens;
  start = Clock::now();
  {
    std::vector<int32_t> prompt(16);
    for (int32_t &token : prompt)
      token = int32_t(engine() % uint32_t(vocab));
    std::vector<int32_t> table{*pages.allocate()};
    runtime::ForwardBatch first;
    first.addChunk(prompt, 0, table, executor->pageSize());
    executor->forwardGreedy(first, firstTokens);
    pages.release(table[0]);
  }
  const double firstTokenMs = millisecondsSince(start);

  const double bandwidth = runtime::cuda::readBandwidthGBs(backend);
  const double gemmRate = runtime::cuda::gemmTflops(backend, 8192);
  const int64_t weightBytes = weightBytesReadPerStep(p);
  const plan::ModelMeta &model = *p.model();

  std::printf("engine %s: %s, %lld layers, %s, weights %.2f GB (%.2f GB read per decode step)\n",
              o.engine.c_str(), model.architecture()->c_str(), (long long)model.num_layers(),
              plan::dtypeName(model.dtype()), double(parameterBytes(p)) / 1e9, double(weightBytes) / 1e9);
  std::printf("device limits (this run): read bandwidth %.0f GB/s, bf16 GEMM 8192^3 %.0f TFLOP/s\n",
              bandwidth, gemmRate);
  std::printf("KV cache: %lld pages of %lld tokens (%.1f GB)\n", (long long)options.kv_pages,
              (long long)kv.page_size(), double(options.kv_pages * kv.page_size() * kvBytesPerToken) / 1e9);
  std::printf("kernels launched as programmatic dependents: %s; GEMM kernels: %s\n",
              o.dependent_launch ? "yes" : "no", o.gemm.c_str());
  std::printf("\ncold start: plan load %.1f ms, CUDA context %.0f ms, JIT empty cache %.0f ms, JIT "
              "warm cache %.0f ms, weight load (%s, warm JIT included) %.0f ms, GEMM kernel choice "
              "(nothing cached) %.0f ms, graph capture (%zu decode sizes) %.0f ms, first 16-token prompt "
              "%.0f ms: %.2f s to the first token with a warm JIT cache\n",
              planMs, backendMs, jitColdMs, jitWarmMs, o.weights.empty() ? "random" : "checkpoint",
              loadMs - captureMs - tuningMs, tuningMs,
              runtime::decodeGraphSizes(executor->maxSeqsPerForward()).size(), captureMs, firstTokenMs,
              (planMs + backendMs + loadMs + firstTokenMs) / 1e3);
  // What the start-up tuning measured on the engine's own GEMMs (each shape
  // over all of its layers) and picked, for some of the decode sizes.
  std::printf("\n| decode GEMM picked at start-up (rows x n x k) | cuBLASLt first answer ms | cuBLASLt best ms "
              "(answer) | GEMV ms | picked |\n| --- | --- | --- | --- | --- |\n");
  double tunedMs[3] = {0, 0, 0};  // all sizes: first answers, best cuBLASLt, picked
  for (const auto &[shape, choice] : backend.gemmChoices()) {
    const bool gemv = choice.kernel == runtime::CudaBackend::GemmKernel::gemv;
    tunedMs[0] += choice.heuristicMs;
    tunedMs[1] += choice.cublasLtMs;
    tunedMs[2] += gemv ? choice.gemvMs : choice.cublasLtMs;
    const int64_t rows = std::get<0>(shape);
    if (rows != 1 && rows != 8 && rows != 64 && rows != 256)
      continue;
    std::printf("| %lld x %lld x %lld%s | %.3f | %.3f (%d) | %.3f | %s |\n", (long long)rows,
                (long long)std::get<1>(shape), (long long)std::get<2>(shape), std::get<5>(shape) ? " + bias" : "",
                choice.heuristicMs, choice.cublasLtMs, choice.algo, choice.gemvMs,
                gemv ? "GEMV" : "cuBLASLt");
  }
  std::printf("| all %zu shapes of the %zu decode sizes | %.3f | %.3f | | %.3f picked |\n\n",
              backend.gemmChoices().size(), runtime::decodeGraphSizes(executor->maxSeqsPerForward()).size(),
              tunedMs[0], tunedMs[1], tunedMs[2]);
  std::vector<float> logits;

  // Prefill: B sequences of L tokens in one forward.
  std::string breakdowns;
  std::printf("| prefill | ms | tokens/s | TFLOP/s | of GEMM rate |\n| --- | --- | --- | --- | --- |\n");
  for (auto [batch, length] : {std::pair<int64_t, int64_t>{1, 4096}, {8, 1024}}) {
    const int64_t pagesPerSequence = ceilDiv(length, executor->pageSize());
    if (batch * length > executor->maxTokensPerForward() || length > executor->maxSeqLen() ||
        batch * pagesPerSequence > pages.numFree()) {
      std::printf("| %lldx%lld | does not fit | | | |\n", (long long)batch, (long long)length);
      continue;
    }
    Sequences seqs{pages, executor->pageSize(), {}, {}};
    runtime::ForwardBatch forward;
    for (int64_t s = 0; s < batch; ++s) {
      seqs.add(randomTokens(engine, length, vocab), length);
      forward.addChunk(seqs.tokens.back(), 0, seqs.tables.back(), executor->pageSize());
    }
    double ms = runtime::cuda::medianMilliseconds(backend, 3, [&] { executor->forward(forward, logits); });
    // 2 x (layer parameters) per token, the LM head per sequence, causal
    // attention. The embedding table and the LM head are one parameter each,
    // or one shared parameter when tied.
    const int64_t tableParams = model.vocab_size() * model.hidden_size();
    const int64_t tables = weightBytesReadPerStep(p) < parameterBytes(p) ? 2 : 1;
    const double layerParams =
        double(parameterBytes(p)) / plan::dtypeBytes(model.dtype()) - double(tables * tableParams);
    const double flops = 2.0 * layerParams * double(batch * length) +
                         2.0 * double(model.vocab_size() * model.hidden_size()) * double(batch) +
                         2.0 * double(model.num_heads() * model.head_dim()) * double(length * length) *
                             double(batch * model.num_layers());
    std::printf("| %lldx%lld | %.1f | %.0f | %.0f | %.0f%% |\n", (long long)batch, (long long)length, ms,
                double(batch * length) / (ms * 1e-3), flops / (ms * 1e-3) / 1e12,
                100.0 * flops / (ms * 1e-3) / 1e12 / gemmRate);
    if (batch == 1)
      breakdowns += stepBreakdown(backend, *executor, p, forward,
                                  "prefill 1x" + std::to_string(length) + ", one by one (forward: " +
                                      formatMs(ms, 1) + " ms)");
  }

  // Decode: B sequences at context C, one token each per step. Their
  // contexts are prefilled, as many sequences a forward as fit; each step
  // appends the previous step's argmax, picked on the device.
  struct DecodeRun {
    Sequences seqs;
    std::vector<int32_t> next;
    int64_t position;
  };
  auto startDecode = [&](int64_t batch, int64_t context, int64_t capacity) {
    std::unique_ptr<DecodeRun> run(new DecodeRun{{pages, executor->pageSize(), {}, {}}, {}, context});
    Sequences &seqs = run->seqs;
    for (int64_t s = 0; s < batch; ++s)
      seqs.add(randomTokens(engine, context, vocab), capacity);
    runtime::ForwardBatch prefill;
    for (int64_t s = 0; s < batch; ++s) {
      for (int64_t at = 0; at < context;) {
        const int64_t room = executor->maxTokensPerForward() - prefill.numTokens();
        const int64_t chunk = std::min(context - at, room);
        prefill.addChunk({seqs.tokens[size_t(s)].data() + at, size_t(chunk)}, int32_t(at),
                         seqs.tables[size_t(s)], executor->pageSize());
        at += chunk;
        if (prefill.numTokens() == executor->maxTokensPerForward() ||
            prefill.numSeqs() == executor->maxSeqsPerForward()) {
          executor->forward(prefill, logits);
          prefill = runtime::ForwardBatch{};
        }
      }
    }
    if (prefill.numSeqs() > 0)
      executor->forward(prefill, logits);
    run->next = randomTokens(engine, batch, vocab);
    return run;
  };
  auto stepBatch = [&](const DecodeRun &run) {
    runtime::ForwardBatch step;
    for (size_t s = 0; s < run.next.size(); ++s)
      step.addChunk({&run.next[s], 1}, int32_t(run.position), run.seqs.tables[s], executor->pageSize());
    return step;
  };
  auto timeSteps = [&](DecodeRun &run) {  // o.repeats + 1 steps (a warm-up)
    return runtime::cuda::medianMilliseconds(backend, o.repeats, [&] {
      executor->forwardGreedy(stepBatch(run), run.next);
      ++run.position;
    });
  };
  // The batch sizes whose step the tables below take apart.
  auto profiled = [](int64_t batch) { return batch == 1 || batch == 64; };
  auto fits = [&](int64_t batch, int64_t capacity) {
    return capacity <= executor->maxSeqLen() && batch <= executor->maxSeqsPerForward() &&
           batch * ceilDiv(capacity, executor->pageSize()) <= pages.numFree();
  };

  std::printf("\n| decode batch | context | step ms | tokens/s | bound ms | of bound |\n"
              "| --- | --- | --- | --- | --- | --- |\n");
  for (int64_t context : o.contexts) {
    for (int64_t batch : o.batches) {
      const int64_t capacity = context + o.repeats + 2;
      if (capacity > executor->maxSeqLen()) {
        std::printf("| %lld | %lld | beyond the engine's max sequence length (%lld) | | | |\n",
                    (long long)batch, (long long)context, (long long)executor->maxSeqLen());
        continue;
      }
      if (!fits(batch, capacity)) {
        std::printf("| %lld | %lld | does not fit the KV cache | | | |\n", (long long)batch, (long long)context);
        continue;
      }
      auto run = startDecode(batch, context, capacity);
      const double ms = timeSteps(*run);
      const double bytes = double(weightBytes) + double(batch * context * kvBytesPerToken);
      const double boundMs = bytes / (bandwidth * 1e9) * 1e3;
      std::printf("| %lld | %lld | %.2f | %.0f | %.2f | %.0f%% |\n", (long long)batch, (long long)context, ms,
                  double(batch) / (ms * 1e-3), boundMs, 100.0 * boundMs / ms);
      if (context == o.contexts.front() && profiled(batch))
        breakdowns += stepBreakdown(backend, *executor, p, stepBatch(*run),
                                    "decode step, batch " + std::to_string(batch) +
                                        ", one by one (graph: " + formatMs(ms, 2) + " ms)");
    }
  }

  // What each kind of step costs inside the decode graph (where Nsight
  // Systems is not at hand): the step timed again with that kind left out
  // (Executor::omitSteps; the outputs are then meaningless), at the first
  // context, for batch 1 and 64 where asked. A kind's cost is how much
  // faster the step runs without it.
  std::vector<std::pair<std::string, std::set<std::string, std::less<>>>> omissions{{"nothing", {}}};
  std::set<std::string, std::less<>> launchKinds;
  for (size_t step = 0; step < p.ranks()->Get(0)->steps()->size(); ++step) {
    const std::string kind(executor->stepKind(step));
    if (kind != "gemm" && launchKinds.insert(kind).second)
      omissions.push_back({kind, {kind}});
  }
  omissions.push_back({"every kernel but the GEMMs", launchKinds});
  omissions.push_back({"the GEMMs", {"gemm"}});
  // What a step costs besides its kernels: building and checking the batch,
  // the input copies, the graph launch, sampling and the copy back.
  std::set<std::string, std::less<>> everyKind = launchKinds;
  everyKind.insert("gemm");
  omissions.push_back({"every step of the forward", everyKind});
  const int64_t context = o.contexts.front();
  const int64_t capacity = context + (o.repeats + 1) * int64_t(omissions.size()) + 1;  // with warm-ups
  std::vector<std::unique_ptr<DecodeRun>> omitRuns;
  std::string header = "\n| decode step (graph) without |", rule = "| --- |";
  for (int64_t batch : o.batches) {
    if (!profiled(batch) || !fits(batch, capacity))
      continue;
    omitRuns.push_back(startDecode(batch, context, capacity));
    header += " batch " + std::to_string(batch) + ", context " + std::to_string(context) + ": ms (saved) |";
    rule += " --- |";
  }
  if (!omitRuns.empty()) {
    std::printf("%s\n%s\n", header.c_str(), rule.c_str());
    std::vector<double> full;
    for (const auto &[name, kinds] : omissions) {
      executor->omitSteps(kinds);
      std::string line = "| " + name + " |";
      for (size_t r = 0; r < omitRuns.size(); ++r) {
        const double ms = timeSteps(*omitRuns[r]);
        if (kinds.empty())
          full.push_back(ms);
        char cell[64];
        std::snprintf(cell, sizeof cell, " %.2f (%.2f) |", ms, full[r] - ms);
        line += cell;
      }
      std::printf("%s\n", line.c_str());
    }
    executor->omitSteps({});
  }

  std::printf("%s", breakdowns.c_str());

  // Decode GEMMs alone: each distinct GEMM of the plan at 1, 4 and 8 rows
  // through cuBLASLt and through the runtime's GEMV, as a fraction of the
  // read bandwidth. The weights rotate over copies that together exceed the
  // L2 many times, so every call reads them from memory, as a decode step does.
  std::printf("\n| decode GEMM (n x k) | rows | cuBLASLt (first answer) us | GEMV us | cuBLASLt of bandwidth | "
              "GEMV of bandwidth |\n| --- | --- | --- | --- | --- | --- |\n");
  std::set<std::tuple<int64_t, int64_t, bool, int>> gemmShapes;
  for (const plan::Step *step : *p.ranks()->Get(0)->steps())
    if (const plan::Gemm *gemm = step->op_as_Gemm()) {
      const plan::Buffer &out = *p.ranks()->Get(0)->buffers()->Get(uint32_t(gemm->out()));
      gemmShapes.emplace(gemm->n(), gemm->k(), gemm->bias() >= 0, int(out.dtype()));
    }
  for (auto [n, k, hasBias, outType] : gemmShapes) {
    const size_t weightBytes = size_t(n * k) * plan::dtypeBytes(model.dtype());
    const int copies = int(std::max<int64_t>(2, ceilDiv(int64_t(1) << 30, int64_t(weightBytes))));
    std::vector<uint16_t> host(weightBytes / 2);
    std::uniform_int_distribution<int> bits(0x3c00, 0x3e00);  // small positive bf16/f16 values
    for (uint16_t &value : host)
      value = uint16_t(bits(engine));
    std::vector<std::unique_ptr<runtime::DeviceBuffer>> weightCopies;
    for (int c = 0; c < copies; ++c) {
      weightCopies.push_back(std::make_unique<runtime::DeviceBuffer>(backend, weightBytes));
      backend.upload(weightCopies.back()->get(), host.data(), weightBytes);
    }
    runtime::DeviceBuffer input(backend, size_t(8 * k) * 2), bias(backend, size_t(n) * 2),
        out(backend, size_t(8 * n) * 4);
    backend.upload(input.get(), host.data(), size_t(8 * k) * 2);
    backend.upload(bias.get(), host.data(), size_t(n) * 2);
    for (int64_t rows : {1, 4, 8}) {
      auto args = [&](int copy) {
        return runtime::GemmArgs{input.get(), weightCopies[size_t(copy)]->get(), hasBias ? bias.get() : nullptr,
                                 out.get(), rows, n, k, model.dtype(), plan::DType(outType)};
      };
      double us[2] = {NAN, NAN};  // cuBLASLt, GEMV (where it takes the GEMM)
      for (auto kernel : {runtime::CudaBackend::GemmKernel::cublasLt, runtime::CudaBackend::GemmKernel::gemv}) {
        if (kernel == runtime::CudaBackend::GemmKernel::gemv &&
            !(backend.hasGemv() && runtime::CudaBackend::gemvTakes(args(0))))
          continue;
        us[int(kernel)] = 1e3 * runtime::cuda::medianMilliseconds(backend, o.repeats, [&] {
          for (int c = 0; c < copies; ++c)
            backend.gemm(args(c), kernel);
        }) / copies;
      }
      const double boundUs = double(weightBytes) / (bandwidth * 1e9) * 1e6;
      std::printf("| %lld x %lld%s | %lld | %.1f | %.1f | %.0f%% | %.0f%% |\n", (long long)n, (long long)k,
                  hasBias ? " + bias" : "", (long long)rows, us[0], us[1], 100.0 * boundUs / us[0],
                  100.0 * boundUs / us[1]);
    }
  }

  // Device sampling alone: rows of random logits, as many as the largest
  // decode batch; normal with sd 3, and narrow ones (sd 0.01, as a model
  // with random weights gives: most tokens then share a few radix buckets).
  const int64_t rows = std::min<int64_t>(executor->maxSeqsPerForward(), 256);
  std::vector<float> spread(size_t(rows * vocab)), narrow(spread.size());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (size_t i = 0; i < spread.size(); ++i) {
    const float z = normal(engine);
    spread[i] = 3.0f * z;
    narrow[i] = 0.01f * z;
  }
  runtime::DeviceBuffer spreadLogits(backend, spread.size() * sizeof(float));
  runtime::DeviceBuffer narrowLogits(backend, narrow.size() * sizeof(float));
  runtime::DeviceBuffer rowParams(backend, size_t(rows) * sizeof(sample::RowSampling));
  runtime::DeviceBuffer rowSamples(backend, size_t(rows) * sizeof(sample::RowSample));
  backend.upload(spreadLogits.get(), spread.data(), spread.size() * sizeof(float));
  backend.upload(narrowLogits.get(), narrow.data(), narrow.size() * sizeof(float));
  std::printf("\n| sampling rows of %lld logits | 1 row, ms (sd 3) | %lld rows, ms (sd 3) | %lld rows, ms (sd 0.01) "
              "|\n| --- | --- | --- | --- |\n",
              (long long)vocab, (long long)rows, (long long)rows);
  struct Case {
    const char *name;
    float temperature, top_p, min_p;
    int top_k, logprobs;
  };
  for (const Case &c : {Case{"greedy", 0, 1, 0, 0, 0}, Case{"temperature 0.8", 0.8f, 1, 0, 0, 0},
                        Case{"temperature 0.8, top-k 50", 0.8f, 1, 0, 50, 0},
                        Case{"temperature 0.8, top-p 0.95", 0.8f, 0.95f, 0, 0, 0},
                        Case{"temperature 0.8, top-k 50, top-p 0.95, min-p 0.05, 5 logprobs", 0.8f, 0.95f, 0.05f,
                             50, 5}}) {
    std::vector<sample::RowSampling> params(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
      params[size_t(r)] = {double(r) / double(rows), c.temperature, c.top_p, c.min_p, c.top_k, c.logprobs, 0, 0};
    backend.upload(rowParams.get(), params.data(), params.size() * sizeof(sample::RowSampling));
    auto time = [&](const runtime::DeviceBuffer &logits, int64_t n) {
      return runtime::cuda::medianMilliseconds(backend, o.repeats, [&] {
        backend.sample(logits.get<float>(), n, vocab, rowParams.get<sample::RowSampling>(), nullptr,
                       rowSamples.get<sample::RowSample>());
      });
    };
    // Timed in the columns' order (function arguments have none), so that
    // a profiler's last launch of a case is its 256-row narrow one.
    const double oneRow = time(spreadLogits, 1), spreadRows = time(spreadLogits, rows),
                 narrowRows = time(narrowLogits, rows);
    std::printf("| %s | %.3f | %.3f | %.3f |\n", c.name, oneRow, spreadRows, narrowRows);
  }
  return 0;
}

} // namespace llmc

#else

namespace llmc {
int runBench(const BenchOptions &o) {
  checkOptions(o);
  throw std::runtime_error("llmrun bench needs the CUDA backend, which this build lacks");
}
} // namespace llmc

#endif
