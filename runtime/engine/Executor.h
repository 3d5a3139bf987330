// Runs forwards of a plan on a backend: owns the device memory (one
// reservation for weights, constants, KV pages, workspace, ABI input arrays
// and sampling rows), resolves every plan buffer to a fixed pointer once, and
// checks each batch before running its steps.
#pragma once

#include "runtime/backend/Backend.h"
#include "runtime/plan/PlanFile.h"
#include "runtime/sample/RowSampling.h"
#include "runtime/weights/safetensors.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace llmc::runtime {

/// A batch the engine cannot run (too large, out-of-vocabulary ids, bad page
/// tables); nothing has been launched when it is thrown.
class BatchError : public std::invalid_argument {
public:
  using std::invalid_argument::invalid_argument;
};

struct ExecutorOptions {
  int64_t max_tokens_per_forward = 0;  // 0: the plan's; must be a multiple of 16
  int64_t max_seqs_per_forward = 0;    // 0: the plan's
  int64_t kv_pages = 0;                // pages in the KV cache (> 0)
  /// Capture decode forwards (one token per sequence) as graphs at start-up,
  /// one per size of decodeGraphSizes(), and replay them, where the backend
  /// supports graphs.
  bool graphs = true;
  /// Called while the weights load (bytes done, total).
  std::function<void(size_t, size_t)> load_progress;
};

/// One forward's inputs in the plan's fixed ABI (host arrays).
struct ForwardBatch {
  std::vector<int32_t> token_ids, positions;
  std::vector<int32_t> qo_indptr{0}, kv_indptr{0}, kv_page_indices, kv_last_page_len, logits_rows;

  /// Adds one sequence's chunk: `tokens` at positions start, start+1, ...,
  /// reading and writing KV through `pages` (the sequence's page table, which
  /// must cover start + tokens.size() positions). Logits come from its last token.
  void addChunk(std::span<const int32_t> tokens, int32_t start, std::span<const int32_t> pages,
                int32_t page_size);
  /// Appends one-token sequences (token 0 at position 0, KV on `page`) until
  /// the batch holds `seqs` sequences: how a decode batch is padded to the
  /// size of a captured graph.
  void padSequences(int64_t seqs, int32_t page, int32_t page_size);
  int64_t numTokens() const { return int64_t(token_ids.size()); }
  int64_t numSeqs() const { return int64_t(logits_rows.size()); }
};

/// Decode batch sizes with a CUDA graph captured at start-up, up to
/// max_seqs: 1, 2, 4, 8, then steps of 8 to 64, then steps of 32, and
/// max_seqs itself. A decode batch runs in the smallest one that holds it.
std::vector<int64_t> decodeGraphSizes(int64_t max_seqs);

/// KV pages that fit in `fraction` of `free_bytes` next to the plan's weights,
/// its workspace at the plan's batch limits and `reserve_bytes` (at least 1).
int64_t kvPagesForMemory(const plan::Plan &plan, size_t free_bytes, double fraction,
                         int64_t reserve_bytes);

class Executor {
public:
  /// Binds the weights from `checkpoint` (found in checkpoint_dir).
  Executor(const plan::PlanFile &plan, Backend &backend, const weights::Checkpoint &checkpoint,
           const std::string &checkpoint_dir, const ExecutorOptions &options);
  /// Random weights (benchmarks without a checkpoint), from `seed`.
  Executor(const plan::PlanFile &plan, Backend &backend, uint64_t seed,
           const ExecutorOptions &options);
  ~Executor();
  Executor(const Executor &) = delete;
  Executor &operator=(const Executor &) = delete;

  const plan::Plan &plan() const { return plan_; }
  int64_t vocabSize() const { return plan_.model()->vocab_size(); }
  int64_t maxSeqLen() const { return plan_.model()->max_seq_len(); }
  int32_t pageSize() const { return int32_t(plan_.kv_cache()->page_size()); }
  int64_t numPages() const { return numPages_; }
  int64_t maxTokensPerForward() const { return maxTokens_; }
  int64_t maxSeqsPerForward() const { return maxSeqs_; }

  /// Runs one forward and returns its logits, numSeqs() rows of vocabSize().
  void forward(const ForwardBatch &batch, std::vector<float> &logits);
  /// Runs one forward and samples each sequence's row where the logits are
  /// (Backend::sample): rows[s] and its adjustments say how; results[s] is
  /// what comes back. Throws BatchError for rows that do not fit the batch.
  void forwardSample(const ForwardBatch &batch, std::span<const sample::RowSampling> rows,
                     std::span<const sample::LogitAdjustment> adjustments,
                     std::vector<sample::RowSample> &results);
  /// forwardSample() in two halves, so that host work can run while the
  /// device computes: launchSample() validates, uploads and launches the
  /// forward and its sampling and returns without waiting (the results are
  /// copied back behind them); collectSamples() waits and hands them over.
  /// One forward at a time: launching or running another before the
  /// collect, or collecting with none launched, throws std::logic_error.
  void launchSample(const ForwardBatch &batch, std::span<const sample::RowSampling> rows,
                    std::span<const sample::LogitAdjustment> adjustments);
  void collectSamples(std::vector<sample::RowSample> &results);
  bool sampling() const { return launchedRows_ >= 0; }
  /// Whether launchSample() returns before the forward is done (see
  /// Backend::asynchronous); otherwise it runs the whole forward.
  bool launchesOverlapHost() const { return backend_.asynchronous(); }
  /// When the last launchSample() began.
  std::chrono::steady_clock::time_point lastLaunchStart() const { return launchedAt_; }
  /// forwardSample() with every row greedy: each sequence's most likely next
  /// token (lowest id on ties).
  void forwardGreedy(const ForwardBatch &batch, std::vector<int32_t> &tokens);
  /// For profiling: uploads the batch's inputs once, then launches its
  /// forward's steps `repeats` times back to back without a graph, calling
  /// afterStep(index into the plan's steps) after launching each. Returns
  /// without waiting; the outputs are those of one forward.
  void launchStepsRepeatedly(const ForwardBatch &batch, int repeats,
                             const std::function<void(size_t step)> &afterStep);
  /// What a plan step is, for profiling: its kernel template's name, or
  /// "gemm" for a Gemm step.
  std::string_view stepKind(size_t step) const;
  /// For profiling: later forwards leave out every step whose stepKind() is
  /// in `kinds` (the decode graphs are captured again without them), so
  /// that timing them shows what those steps cost inside the whole forward.
  /// The outputs are then meaningless. An empty set restores the forward.
  void omitSteps(const std::set<std::string, std::less<>> &kinds);
  /// The backend GEMM a plan Gemm step makes for a batch of this shape.
  GemmArgs gemmArgs(const plan::Gemm &gemm, const BatchShape &shape) const;
  /// Wall time from each forward's launch until its results were collected
  /// (forward(), forwardSample(), launchSample() to collectSamples()); in a
  /// loop that collects right after launching, the rest of its time is host
  /// work during which the device idles.
  double forwardSeconds() const { return forwardSeconds_; }
  /// Wall time the start-up graph captures took (0 without graphs).
  double graphCaptureSeconds() const { return graphCaptureSeconds_; }
  /// Wall time the backend took at start-up to pick its GEMM kernels.
  double gemmTuningSeconds() const { return gemmTuningSeconds_; }
  /// Bytes of the device reservation made at construction.
  size_t reservedBytes() const { return reservedBytes_; }

private:
  Executor(const plan::PlanFile &plan, Backend &backend, const ExecutorOptions &options);
  /// Sizes one reservation from the plan and the limits, allocates it (so a
  /// device too small fails before any weight loads) and carves it: weights_,
  /// constants_, keys_, values_, the ABI block, the sampling rows, workspace_.
  void reserve();
  /// Uploads the constants and resolves every plan buffer to its pointer.
  void bindBuffers();
  void prepareDecode();
  void captureDecodeGraphs();

  /// Everything the executor owns on the device, released on destruction
  /// (also when the constructor throws half-way): the reservation, and the
  /// logit adjustments of penalised rows (sized by the forwards that need
  /// them, the one allocation after start-up).
  struct DeviceMemory {
    Backend &backend;
    void *reservation = nullptr;
    void *adjustments = nullptr;
    sample::RowSample *hostSamples = nullptr;  // host memory: where results land
    // Host memory the uploads copy from: the ABI arrays at inputOffsets_,
    // and forwardSample()'s rows.
    int32_t *hostInputs = nullptr;
    sample::RowSampling *hostRows = nullptr;
    ~DeviceMemory();
  };

  void validate(const ForwardBatch &batch) const;
  /// Validates, uploads and launches a forward (with its sampling rows, if
  /// any); its logits stay on the device.
  BatchShape run(const ForwardBatch &batch, std::span<const sample::RowSampling> rows = {});
  void requireNothingInFlight(const char *what) const;
  /// Queues the copies of a forward's inputs, once the last forward's have
  /// run: the host side of an asynchronous copy must not change before then.
  void uploadInputs(const ForwardBatch &inputs, std::span<const sample::RowSampling> rows);
  void runSteps(const BatchShape &shape, const std::function<void(size_t step)> &afterStep = {});
  /// One plan step's launch or GEMM; `args` is scratch for kernel arguments.
  void launchStep(const plan::Step &step, const BatchShape &shape, std::vector<void *> &args);

  const plan::Plan &plan_;
  const plan::RankProgram &rank_;
  Backend &backend_;
  int64_t maxTokens_, maxSeqs_, numPages_, pageCapacity_;
  DeviceMemory memory_;
  size_t reservedBytes_ = 0;
  std::vector<void *> weights_, constants_, keys_, values_;  // in the reservation
  char *workspace_ = nullptr;
  std::vector<void *> buffers_;      // one pointer per plan buffer
  int32_t *inputBlock_ = nullptr;      // the ABI arrays on the device, at inputOffsets_
  sample::RowSampling *rowParams_ = nullptr;  // forwardSample's rows on the device
  sample::RowSample *rowSamples_ = nullptr;   // ... and their results
  size_t adjustmentCapacity_ = 0;   // entries of memory_.adjustments
  std::vector<size_t> inputOffsets_;   // in elements, in kAbiArrays order
  int32_t logitsBuffer_ = -1;
  bool graphs_ = true;
  std::map<int64_t, void *> decodeGraphs_;  // batch size -> captured decode forward
  std::vector<bool> omittedSteps_;          // by plan step (omitSteps); empty: none
  int32_t scratchPage_ = 0;  // the KV page past the cache that padding sequences write
  int64_t launchedRows_ = -1;  // rows of the launchSample() not yet collected
  std::chrono::steady_clock::time_point launchedAt_;
  double forwardSeconds_ = 0, graphCaptureSeconds_ = 0, gemmTuningSeconds_ = 0;
};

} // namespace llmc::runtime
