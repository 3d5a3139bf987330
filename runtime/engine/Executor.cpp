#include "runtime/engine/Executor.h"

#include "runtime/plan/Abi.h"
#include "runtime/support/Math.h"
#include "runtime/weights/Recipes.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <utility>

namespace llmc::runtime {
namespace {

[[noreturn]] void reject(const std::string &message) { throw BatchError(message); }

// Adds the wall time of a scope to a counter.
struct TimeInto {
  double &seconds;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  ~TimeInto() { seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
};


// The batch's arrays in plan::kAbiInputs order (the device input block's).
constexpr std::vector<int32_t> ForwardBatch::*kAbiFields[] = {
    &ForwardBatch::token_ids,        &ForwardBatch::positions,   &ForwardBatch::qo_indptr,
    &ForwardBatch::kv_indptr,        &ForwardBatch::kv_last_page_len,
    &ForwardBatch::logits_rows,      &ForwardBatch::kv_page_indices,
};
static_assert(std::size(kAbiFields) == std::size(plan::kAbiInputs));

} // namespace

int64_t kvPagesForMemory(const plan::Plan &p, size_t free_bytes, double fraction,
                         int64_t reserve_bytes) {
  const plan::RankProgram &rank = *p.ranks()->Get(0);
  const int64_t budget = int64_t(double(free_bytes) * fraction) - plan::parameterBytes(rank) -
                         plan::workspaceBytes(rank, p.max_tokens_per_forward(), p.max_seqs_per_forward()) -
                         reserve_bytes;
  return std::max<int64_t>(1, budget / (plan::kvBytesPerToken(p) * p.kv_cache()->page_size()));
}

void ForwardBatch::addChunk(std::span<const int32_t> tokens, int32_t start,
                            std::span<const int32_t> pages, int32_t page_size) {
  const int32_t end = start + int32_t(tokens.size());  // KV length after this chunk
  for (size_t i = 0; i < tokens.size(); ++i) {
    token_ids.push_back(tokens[i]);
    positions.push_back(start + int32_t(i));
  }
  const int64_t usedPages = ceilDiv(end, page_size);
  kv_page_indices.insert(kv_page_indices.end(), pages.begin(),
                         pages.begin() + std::min<int64_t>(usedPages, int64_t(pages.size())));
  qo_indptr.push_back(int32_t(token_ids.size()));
  kv_indptr.push_back(int32_t(kv_page_indices.size()));
  kv_last_page_len.push_back(end - int32_t(usedPages - 1) * page_size);
  logits_rows.push_back(int32_t(token_ids.size()) - 1);
}

void ForwardBatch::padSequences(int64_t seqs, int32_t page, int32_t page_size) {
  const int32_t token = 0;
  while (numSeqs() < seqs)
    addChunk({&token, 1}, 0, {&page, 1}, page_size);
}

std::vector<int64_t> decodeGraphSizes(int64_t max_seqs) {
  std::vector<int64_t> sizes;
  for (int64_t size = 1; size <= max_seqs; size = size < 8 ? size * 2 : size + (size < 64 ? 8 : 32))
    sizes.push_back(size);
  if (sizes.back() != max_seqs)
    sizes.push_back(max_seqs);
  return sizes;
}

Executor::Executor(const plan::PlanFile &file, Backend &backend,
                   const weights::Checkpoint &checkpoint, const std::string &checkpoint_dir,
                   const ExecutorOptions &options)
    : Executor(file, backend, options) {
  bindWeights(rank_, checkpoint, checkpoint_dir, backend_, weights_, options.load_progress);
  bindBuffers();
  prepareDecode();
}

Executor::Executor(const plan::PlanFile &file, Backend &backend, uint64_t seed,
                   const ExecutorOptions &options)
    : Executor(file, backend, options) {
  bindRandomWeights(rank_, seed, backend_, weights_);
  bindBuffers();
  prepareDecode();
}

Executor::Executor(const plan::PlanFile &file, Backend &backend, const ExecutorOptions &options)
    : plan_(file.plan()), rank_(*plan_.ranks()->Get(0)), backend_(backend), memory_{backend, {}} {
  if (plan_.ranks()->size() != 1)
    throw std::invalid_argument("this runtime runs single-rank plans only");
  maxTokens_ = options.max_tokens_per_forward ? options.max_tokens_per_forward
                                              : plan_.max_tokens_per_forward();
  maxSeqs_ = options.max_seqs_per_forward ? options.max_seqs_per_forward
                                          : plan_.max_seqs_per_forward();
  numPages_ = options.kv_pages;
  graphs_ = options.graphs;
  if (numPages_ > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("the KV cache holds at most 2^31 - 1 pages");
  if (maxTokens_ <= 0 || maxTokens_ % 16 != 0)
    throw std::invalid_argument("max tokens per forward must be a positive multiple of 16");
  if (maxSeqs_ <= 0 || maxSeqs_ > maxTokens_)
    throw std::invalid_argument("max sequences per forward must be in [1, max tokens per forward]");
  if (numPages_ <= 0)
    throw std::invalid_argument("the KV cache needs at least one page");
  // Each sequence's page table can reach max_seq_len / page_size entries.
  pageCapacity_ = maxSeqs_ * ceilDiv(plan_.model()->max_seq_len(), plan_.kv_cache()->page_size());

  backend_.loadKernels(plan_);
  reserve();
}

void Executor::reserve() {
  // Regions at 256-byte offsets (what cuMemAlloc guarantees a pointer).
  size_t total = 0;
  auto carve = [&total](size_t bytes) {
    const size_t at = total;
    total += (bytes + 255) / 256 * 256;
    return at;
  };
  std::vector<size_t> weights, constants, keys, values;
  for (const plan::Parameter *param : *rank_.parameters())
    weights.push_back(carve(parameterBytes(*param)));
  const size_t weightBytes = total;
  if (rank_.constants())
    for (const plan::Constant *constant : *rank_.constants())
      constants.push_back(carve(constant->data()->size()));
  // One page more than the cache holds: padding sequences write there.
  const plan::KvCacheSpec &kv = *plan_.kv_cache();
  scratchPage_ = int32_t(numPages_);
  const size_t layerBytes = size_t((numPages_ + 1) * kv.page_size() * kv.num_kv_heads() *
                                   kv.head_dim() * plan::dtypeBytes(kv.dtype()));
  const size_t kvStart = total;
  for (int64_t layer = 0; layer < kv.num_layers(); ++layer) {
    keys.push_back(carve(layerBytes));
    values.push_back(carve(layerBytes));
  }
  const size_t kvBytes = total - kvStart;
  // All ABI arrays live in one block (one upload per forward).
  size_t elements = 0;
  for (const plan::AbiInput &input : plan::kAbiInputs) {
    inputOffsets_.push_back(elements);
    const std::string_view rows = input.rows;
    elements += size_t(rows == "pages" ? pageCapacity_ : rows == "tokens" ? maxTokens_ : maxSeqs_ + 1);
  }
  const size_t inputs = carve(elements * sizeof(int32_t));
  const size_t rowParams = carve(size_t(maxSeqs_) * sizeof(sample::RowSampling));
  const size_t rowSamples = carve(size_t(maxSeqs_) * sizeof(sample::RowSample));
  const size_t workspaceBytes = size_t(plan::workspaceBytes(rank_, maxTokens_, maxSeqs_));
  const size_t workspace = carve(workspaceBytes);

  try {
    memory_.reservation = backend_.allocate(total);
  } catch (const std::exception &error) {
    auto gb = [](size_t bytes) {
      char text[32];
      std::snprintf(text, sizeof text, "%.2f GB", double(bytes) / 1e9);
      return std::string(text);
    };
    throw std::runtime_error("the engine needs " + gb(total) + " of device memory (weights " + gb(weightBytes) +
                             ", KV cache " + gb(kvBytes) + ", workspace " + gb(workspaceBytes) +
                             "); a smaller KV cache or batch limits need less: " + error.what());
  }
  reservedBytes_ = total;
  auto *base = static_cast<char *>(memory_.reservation);
  for (size_t at : weights)
    weights_.push_back(base + at);
  for (size_t at : constants)
    constants_.push_back(base + at);
  for (size_t i = 0; i < keys.size(); ++i) {
    keys_.push_back(base + keys[i]);
    values_.push_back(base + values[i]);
  }
  inputBlock_ = reinterpret_cast<int32_t *>(base + inputs);
  rowParams_ = reinterpret_cast<sample::RowSampling *>(base + rowParams);
  rowSamples_ = reinterpret_cast<sample::RowSample *>(base + rowSamples);
  workspace_ = base + workspace;
  memory_.hostSamples =
      static_cast<sample::RowSample *>(backend_.allocateHost(size_t(maxSeqs_) * sizeof(sample::RowSample)));
  memory_.hostInputs = static_cast<int32_t *>(backend_.allocateHost(elements * sizeof(int32_t)));
  memory_.hostRows =
      static_cast<sample::RowSampling *>(backend_.allocateHost(size_t(maxSeqs_) * sizeof(sample::RowSampling)));
}

void Executor::bindBuffers() {
  if (rank_.constants())
    for (size_t i = 0; i < constants_.size(); ++i) {
      const plan::Constant *constant = rank_.constants()->Get(uint32_t(i));
      backend_.upload(constants_[i], constant->data()->data(), constant->data()->size());
    }
  const int64_t tokensRegion = rank_.workspace_bytes_per_token() * maxTokens_;
  for (const plan::Buffer *buffer : *rank_.buffers()) {
    void *pointer = nullptr;
    switch (buffer->kind()) {
    case plan::BufferKind::workspace:
      pointer = buffer->rows() == plan::RowCount::seqs
                    ? workspace_ + tokensRegion + buffer->offset_per_row() * maxSeqs_
                    : workspace_ + buffer->offset_per_row() * maxTokens_;
      break;
    case plan::BufferKind::input: {
      const auto *input = std::find_if(std::begin(plan::kAbiInputs), std::end(plan::kAbiInputs),
                                       [&](auto &abi) { return buffer->name()->string_view() == abi.name; });
      if (input == std::end(plan::kAbiInputs))
        throw std::invalid_argument("the plan reads an unknown forward input '" +
                                    buffer->name()->str() + "'");
      pointer = inputBlock_ + inputOffsets_[size_t(input - std::begin(plan::kAbiInputs))];
      break;
    }
    case plan::BufferKind::parameter: pointer = weights_[size_t(buffer->index())]; break;
    case plan::BufferKind::constant: pointer = constants_[size_t(buffer->index())]; break;
    case plan::BufferKind::kv_keys: pointer = keys_[size_t(buffer->index())]; break;
    case plan::BufferKind::kv_values: pointer = values_[size_t(buffer->index())]; break;
    }
    buffers_.push_back(pointer);
  }
  for (const plan::Output *output : *rank_.outputs())
    if (output->name()->string_view() == "logits")
      logitsBuffer_ = output->buffer();
  const plan::Buffer *logits = logitsBuffer_ >= 0 ? rank_.buffers()->Get(logitsBuffer_) : nullptr;
  if (!logits || logits->dtype() != plan::DType::f32 || logits->cols() != vocabSize() ||
      logits->rows() != plan::RowCount::seqs)
    throw std::invalid_argument("the plan has no fp32 logits output of [seqs, vocab]");
}

// Decode forwards run at the graph sizes (padded up to one), so the backend
// picks its GEMM kernels for those row counts first, on the real weights
// (without graphs, other row counts take the backend's default kernel). A
// forward of the whole token budget, which is what a long prompt's chunks
// and a busy server's mixed batches run, is tuned too: at that size the
// heuristic's first answer is not always cuBLASLt's fastest.
// Every pointer is fixed and only T and S vary, so a decode forward of a
// given batch size is the same launch sequence each time: capture one per
// size up front (nothing runs while capturing).
void Executor::prepareDecode() {
  {
    TimeInto timer{gemmTuningSeconds_};
    std::vector<BatchShape> shapes;
    for (int64_t size : decodeGraphSizes(maxSeqs_))
      shapes.push_back({size, size});
    shapes.push_back({maxTokens_, maxSeqs_});
    std::vector<GemmArgs> gemms;
    for (const BatchShape &shape : shapes) {
      gemms.clear();
      for (const plan::Step *step : *rank_.steps())
        if (const plan::Gemm *gemm = step->op_as_Gemm())
          gemms.push_back(gemmArgs(*gemm, shape));
      backend_.tuneGemms(gemms);
    }
  }
  TimeInto timer{graphCaptureSeconds_};
  captureDecodeGraphs();
}

void Executor::captureDecodeGraphs() {
  for (auto &[batch, graph] : decodeGraphs_)
    backend_.destroyGraph(graph);
  decodeGraphs_.clear();
  if (!graphs_)
    return;
  for (int64_t size : decodeGraphSizes(maxSeqs_)) {
    if (!backend_.beginCapture())
      break;  // the backend has no graphs
    try {
      runSteps({size, size});
    } catch (...) {
      backend_.destroyGraph(backend_.endCapture());  // leave capture mode, then report
      throw;
    }
    decodeGraphs_.emplace(size, backend_.endCapture());
  }
}

Executor::~Executor() {
  // Copies to or from the host buffers may still be queued (after
  // launchSample, launchStepsRepeatedly or a failed launch).
  try {
    backend_.synchronize();
  } catch (const std::exception &) {
  }
  for (auto &[batch, graph] : decodeGraphs_)
    backend_.destroyGraph(graph);
}

Executor::DeviceMemory::~DeviceMemory() {
  // After a sticky device error releases fail too; the memory goes with the
  // context, and a destructor must not throw.
  for (void *pointer : {reservation, adjustments}) {
    try {
      if (pointer)
        backend.release(pointer);
    } catch (const std::exception &) {
    }
  }
  for (void *pointer : {static_cast<void *>(hostSamples), static_cast<void *>(hostInputs),
                        static_cast<void *>(hostRows)}) {
    try {
      if (pointer)
        backend.releaseHost(pointer);
    } catch (const std::exception &) {
    }
  }
}

// Everything the kernels index with is checked here, so that a bad batch is
// an error message and never an out-of-bounds access.
void Executor::validate(const ForwardBatch &b) const {
  const int64_t T = b.numTokens(), S = b.numSeqs();
  if (T < 1 || T > maxTokens_)
    reject("a forward takes 1 to " + std::to_string(maxTokens_) + " tokens, got " + std::to_string(T));
  if (S < 1 || S > maxSeqs_)
    reject("a forward takes 1 to " + std::to_string(maxSeqs_) + " sequences, got " + std::to_string(S));
  if (b.positions.size() != size_t(T) || b.qo_indptr.size() != size_t(S + 1) ||
      b.kv_indptr.size() != size_t(S + 1) || b.kv_last_page_len.size() != size_t(S))
    reject("forward arrays have inconsistent lengths");
  if (int64_t(b.kv_page_indices.size()) > pageCapacity_)
    reject("page tables hold " + std::to_string(b.kv_page_indices.size()) + " entries, at most " +
           std::to_string(pageCapacity_) + " fit");
  for (int32_t id : b.token_ids)
    if (id < 0 || id >= vocabSize())
      reject("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
             std::to_string(vocabSize()) + ")");
  for (int32_t page : b.kv_page_indices)
    if (page < 0 || page >= numPages_)
      reject("KV page " + std::to_string(page) + " does not exist");
  if (b.qo_indptr[0] != 0 || b.kv_indptr[0] != 0 || b.qo_indptr[S] != T ||
      b.kv_indptr[S] != int32_t(b.kv_page_indices.size()))
    reject("indptr arrays must start at 0 and end at the token and page counts");
  for (int64_t s = 0; s < S; ++s) {
    const int32_t q0 = b.qo_indptr[s], q1 = b.qo_indptr[s + 1];
    const int32_t pages = b.kv_indptr[s + 1] - b.kv_indptr[s];
    const int32_t last = b.kv_last_page_len[s];
    if (q1 <= q0 || pages < 1 || last < 1 || last > pageSize())
      reject("sequence " + std::to_string(s) + " has no tokens, no pages or a bad last-page length");
    const int64_t kvLen = int64_t(pages - 1) * pageSize() + last;
    // Also bounds the page tables of a decode batch padded to a graph's size.
    if (kvLen > maxSeqLen())
      reject("sequence " + std::to_string(s) + " has a KV length of " + std::to_string(kvLen) +
             ", beyond the max sequence length " + std::to_string(maxSeqLen()));
    for (int32_t t = q0; t < q1; ++t)
      if (b.positions[t] < 0 || b.positions[t] >= kvLen || b.positions[t] >= maxSeqLen())
        reject("position " + std::to_string(b.positions[t]) + " of sequence " + std::to_string(s) +
               " is outside its KV length " + std::to_string(kvLen) + " or the max sequence length " +
               std::to_string(maxSeqLen()));
    if (b.logits_rows[s] < q0 || b.logits_rows[s] >= q1)
      reject("logits row of sequence " + std::to_string(s) + " is not one of its tokens");
  }
}

std::string_view Executor::stepKind(size_t step) const {
  if (const plan::Launch *launch = rank_.steps()->Get(uint32_t(step))->op_as_Launch())
    return plan_.kernels()->Get(uint32_t(launch->kernel()))->kernel_template()->string_view();
  return "gemm";
}

void Executor::omitSteps(const std::set<std::string, std::less<>> &kinds) {
  requireNothingInFlight("omitSteps()");
  omittedSteps_.clear();
  if (!kinds.empty())
    for (size_t index = 0; index < rank_.steps()->size(); ++index)
      omittedSteps_.push_back(kinds.count(stepKind(index)) > 0);
  backend_.synchronize();  // no replay of the graphs about to go may still run
  captureDecodeGraphs();
}

void Executor::runSteps(const BatchShape &shape, const std::function<void(size_t step)> &afterStep) {
  std::vector<void *> args;
  for (size_t index = 0; index < rank_.steps()->size(); ++index) {
    if (omittedSteps_.empty() || !omittedSteps_[index])
      launchStep(*rank_.steps()->Get(uint32_t(index)), shape, args);
    if (afterStep)
      afterStep(index);
  }
}

void Executor::launchStep(const plan::Step &step, const BatchShape &shape, std::vector<void *> &args) {
  if (const plan::Launch *launch = step.op_as_Launch()) {
    args.clear();
    for (int32_t buffer : *launch->buffers())
      args.push_back(buffers_[size_t(buffer)]);
    std::span<const plan::Scalar> scalars;
    if (launch->scalars())
      scalars = {reinterpret_cast<const plan::Scalar *>(launch->scalars()->Data()),
                 launch->scalars()->size()};  // structs are stored inline
    backend_.launch(plan_, launch->kernel(), args, scalars, shape);
  } else if (const plan::Gemm *gemm = step.op_as_Gemm()) {
    backend_.gemm(gemmArgs(*gemm, shape));
  }
}

GemmArgs Executor::gemmArgs(const plan::Gemm &gemm, const BatchShape &shape) const {
  const plan::Buffer &input = *rank_.buffers()->Get(gemm.input());
  const plan::Buffer &out = *rank_.buffers()->Get(gemm.out());
  return {buffers_[size_t(gemm.input())], buffers_[size_t(gemm.weight())],
          gemm.bias() >= 0 ? buffers_[size_t(gemm.bias())] : nullptr, buffers_[size_t(gemm.out())],
          input.rows() == plan::RowCount::seqs ? shape.num_seqs : shape.num_tokens, gemm.n(), gemm.k(),
          input.dtype(), out.dtype()};
}


void Executor::requireNothingInFlight(const char *what) const {
  if (sampling())
    throw std::logic_error(std::string(what) + " while a launched forward is not collected");
}

void Executor::forward(const ForwardBatch &batch, std::vector<float> &logits) {
  requireNothingInFlight("forward()");
  TimeInto timer{forwardSeconds_};
  const BatchShape shape = run(batch);
  logits.resize(size_t(shape.num_seqs * vocabSize()));
  backend_.download(logits.data(), buffers_[size_t(logitsBuffer_)], logits.size() * sizeof(float));
}

void Executor::forwardSample(const ForwardBatch &batch, std::span<const sample::RowSampling> rows,
                             std::span<const sample::LogitAdjustment> adjustments,
                             std::vector<sample::RowSample> &results) {
  launchSample(batch, rows, adjustments);
  collectSamples(results);
}

void Executor::launchSample(const ForwardBatch &batch, std::span<const sample::RowSampling> rows,
                            std::span<const sample::LogitAdjustment> adjustments) {
  requireNothingInFlight("launchSample()");
  const auto start = std::chrono::steady_clock::now();
  if (int64_t(rows.size()) != batch.numSeqs())
    reject("a forward of " + std::to_string(batch.numSeqs()) + " sequences needs as many sampling rows, got " +
           std::to_string(rows.size()));
  if (batch.numSeqs() > maxSeqs_)  // run() checks the rest of the batch
    reject("a forward takes 1 to " + std::to_string(maxSeqs_) + " sequences, got " +
           std::to_string(batch.numSeqs()));
  // What the sampling kernel relies on: parameters in range (so some token
  // keeps a positive weight), and each row's adjustments in range and in
  // strictly increasing token order (one thread per logit).
  for (const sample::RowSampling &row : rows) {
    if (!(row.temperature >= 0) || !(row.min_p >= 0 && row.min_p <= 1) ||
        (row.temperature > 0 && !(row.top_p > 0 && row.top_p <= 1)) || !(row.u >= 0 && row.u < 1) ||
        row.logprobs < 0 || row.logprobs > sample::kMaxTopLogprobs)
      reject("a sampling row's parameters are out of range");
    if (row.first_adjustment < 0 || row.num_adjustments < 0 ||
        size_t(row.first_adjustment) + size_t(row.num_adjustments) > adjustments.size())
      reject("a sampling row's adjustments are out of range");
    for (int j = 1; j < row.num_adjustments; ++j)
      if (adjustments[size_t(row.first_adjustment + j)].token <= adjustments[size_t(row.first_adjustment + j - 1)].token)
        reject("a sampling row's adjustments are not in increasing token order");
  }
  if (adjustments.size() > adjustmentCapacity_) {
    const size_t capacity = std::max(adjustments.size(), 2 * adjustmentCapacity_);
    if (memory_.adjustments)
      backend_.release(std::exchange(memory_.adjustments, nullptr));
    adjustmentCapacity_ = 0;
    memory_.adjustments = backend_.allocate(capacity * sizeof(sample::LogitAdjustment));
    adjustmentCapacity_ = capacity;
  }
  auto *deviceAdjustments = static_cast<sample::LogitAdjustment *>(memory_.adjustments);
  if (!adjustments.empty())
    backend_.upload(deviceAdjustments, adjustments.data(), adjustments.size_bytes());
  const BatchShape shape = run(batch, rows);
  backend_.sample(static_cast<float *>(buffers_[size_t(logitsBuffer_)]), shape.num_seqs, vocabSize(),
                  rowParams_, deviceAdjustments, rowSamples_);
  backend_.downloadAsync(memory_.hostSamples, rowSamples_, size_t(shape.num_seqs) * sizeof(sample::RowSample));
  launchedRows_ = shape.num_seqs;
  launchedAt_ = start;
}

void Executor::collectSamples(std::vector<sample::RowSample> &results) {
  if (!sampling())
    throw std::logic_error("collectSamples() with no forward launched");
  const int64_t rows = std::exchange(launchedRows_, -1);
  backend_.synchronize();
  results.assign(memory_.hostSamples, memory_.hostSamples + rows);
  forwardSeconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - launchedAt_).count();
}

void Executor::forwardGreedy(const ForwardBatch &batch, std::vector<int32_t> &tokens) {
  std::vector<sample::RowSampling> rows(size_t(batch.numSeqs()), sample::RowSampling{});
  std::vector<sample::RowSample> results;
  forwardSample(batch, rows, {}, results);
  tokens.resize(results.size());
  std::transform(results.begin(), results.end(), tokens.begin(),
                 [](const sample::RowSample &r) { return r.token; });
}

BatchShape Executor::run(const ForwardBatch &batch, std::span<const sample::RowSampling> rows) {
  validate(batch);
  const BatchShape shape{batch.numTokens(), batch.numSeqs()};
  // A decode batch runs in the smallest captured graph that holds it, padded
  // with one-token sequences whose rows nobody reads.
  const bool decode = shape.num_tokens == shape.num_seqs;
  const auto graph = decode ? decodeGraphs_.lower_bound(shape.num_seqs) : decodeGraphs_.end();
  ForwardBatch padded;
  const ForwardBatch *inputs = &batch;
  if (graph != decodeGraphs_.end() && graph->first > shape.num_seqs) {
    padded = batch;
    padded.padSequences(graph->first, scratchPage_, pageSize());
    inputs = &padded;
  }
  uploadInputs(*inputs, rows);
  if (graph != decodeGraphs_.end())
    backend_.replay(graph->second);
  else
    runSteps(shape);
  return shape;
}

void Executor::uploadInputs(const ForwardBatch &inputs, std::span<const sample::RowSampling> rows) {
  // Idle already after a forward that was collected; not after one whose
  // launch failed or launchStepsRepeatedly().
  backend_.synchronize();
  size_t used = 0;
  for (size_t i = 0; i < std::size(kAbiFields); ++i) {
    const std::vector<int32_t> &host = inputs.*kAbiFields[i];
    std::copy(host.begin(), host.end(), memory_.hostInputs + inputOffsets_[i]);
    used = inputOffsets_[i] + host.size();
  }
  backend_.uploadAsync(inputBlock_, memory_.hostInputs, used * sizeof(int32_t));
  if (!rows.empty()) {
    std::copy(rows.begin(), rows.end(), memory_.hostRows);
    backend_.uploadAsync(rowParams_, memory_.hostRows, rows.size_bytes());
  }
}

void Executor::launchStepsRepeatedly(const ForwardBatch &batch, int repeats,
                                     const std::function<void(size_t step)> &afterStep) {
  requireNothingInFlight("launchStepsRepeatedly()");
  validate(batch);
  uploadInputs(batch, {});
  for (int r = 0; r < repeats; ++r)
    runSteps({batch.numTokens(), batch.numSeqs()}, afterStep);
}

} // namespace llmc::runtime
