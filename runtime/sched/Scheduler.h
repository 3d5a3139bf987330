// Continuous batching: requests join and leave between forwards.
//
// Each step() builds one forward within the token and sequence budgets:
// running sequences first, oldest first (a decode is one token, a prompt a
// chunk of what is left of the budget), then waiting requests, first come
// first served, while their whole prompt fits in the free KV pages and fewer
// sequences run than one forward takes. Pages are
// taken as tokens need them; when none is left, the newest running sequence
// is preempted: its pages go back and it waits at the head of the queue to be
// recomputed (its prompt and the tokens it has generated) when pages free up.
// No request is lost.
//
// With prefix caching, every full page of computed KV is published to the
// BlockManager's prefix cache, and an admitted sequence starts from the
// longest run of cached pages its tokens begin with (a preempted one usually
// finds its own pages there still). A waiting request whose next page a
// running sequence is about to publish waits for it (and so do the requests
// behind it), rather than computing the same KV in the same forward.
#pragma once

#include "runtime/engine/Executor.h"
#include "runtime/kv/BlockManager.h"
#include "runtime/sample/Sampler.h"
#include "runtime/text/Tokenizer.h"

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace llmc::runtime {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  sample::SamplingParams sampling;
  int max_tokens = 16;
  int min_tokens = 0;       // end-of-sequence tokens are masked until this many exist
  bool ignore_eos = false;  // generate max_tokens whatever comes
  std::vector<int32_t> stop_token_ids;  // end the sequence like EOS (also kept in tokens)
  std::vector<std::string> stop;        // stop strings (need a tokenizer); not part of text
};

struct GenerationResult {
  std::vector<int32_t> tokens;                // generated tokens (an ending EOS included)
  std::vector<sample::SampleResult> samples;  // one per generated token, with logprobs
  std::string finish_reason;  // "stop" (EOS, stop token or string), "length" or "error"
  std::string text;  // the detokenized output up to any stop string (with a tokenizer)
  int64_t cached_tokens = 0;  // prompt tokens whose KV came from the prefix cache
};

struct SchedulerOptions {
  // Budgets of one forward; 0: the executor's maximum (more is an error).
  int64_t tokens_per_forward = 0;
  int64_t seqs_per_forward = 0;
  std::vector<int32_t> eos_token_ids;
  uint64_t seed = 0;  // for requests without a seed of their own (plus the request's id)
  /// Detokenizes outputs (text deltas) and matches stop strings.
  const text::Tokenizer *tokenizer = nullptr;
  bool prefix_caching = true;
};

/// What one step produced for one sequence.
struct SequenceUpdate {
  uint64_t id;
  std::optional<sample::SampleResult> sample;  // the new token (none when it failed)
  std::string text;             // new output text (held back while it may start a stop string)
  bool finished = false;
  std::string finish_reason;  // when finished
  std::string error;          // with finish_reason "error"
  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache
};

struct SchedulerCounters {
  int64_t forwards = 0, preemptions = 0;
  int64_t prompt_tokens = 0, cached_prompt_tokens = 0;  // at first admission
  int64_t computed_tokens = 0;                         // tokens run through forwards
};

/// Checks a request against the engine; throws std::invalid_argument with a
/// clear message (empty prompt, prompt plus max_tokens beyond the max sequence
/// length or the KV cache, out-of-vocabulary ids, invalid sampling parameters).
void validateRequest(const GenerationRequest &request, const Executor &executor);

class Scheduler {
public:
  Scheduler(Executor &executor, BlockManager &pages, const SchedulerOptions &options);
  ~Scheduler();  // every page of unfinished sequences goes back
  Scheduler(const Scheduler &) = delete;
  Scheduler &operator=(const Scheduler &) = delete;

  /// Validates and queues a request; returns its id (0, 1, 2, ...).
  uint64_t add(GenerationRequest request);
  /// Drops a waiting or running request; its pages go back at once. False
  /// when there is no such request (it finished or never existed).
  bool abort(uint64_t id);

  bool idle() const { return waiting_.empty() && running_.empty(); }
  size_t numWaiting() const { return waiting_.size(); }
  size_t numRunning() const { return running_.size(); }
  const SchedulerCounters &counters() const { return counters_; }

  /// Runs one forward, if there is anything to run, and returns the new
  /// tokens it sampled: launch() then complete(). A failing forward throws;
  /// its sequences are then finished with reason "error" by failAll().
  std::vector<SequenceUpdate> step();
  /// step() in two halves, so that a caller's own host work (handing out
  /// the previous updates) runs while the device computes: launch()
  /// schedules and launches the next forward (false: nothing to run) and
  /// complete() waits for it and returns its updates. In between, add() may
  /// queue requests; abort(), launch() and a second complete() throw
  /// std::logic_error.
  bool launch();
  std::vector<SequenceUpdate> complete();
  bool inFlight() const { return !scheduled_.empty(); }
  const Executor &executor() const { return executor_; }
  /// Finishes every request with finish_reason "error" and this message.
  std::vector<SequenceUpdate> failAll(const std::string &message);

private:
  struct Sequence;
  bool ensurePages(Sequence &seq, int64_t tokens);
  void preempt(Sequence &seq);
  void releasePages(Sequence &seq);
  void matchCachedPrefix(Sequence &seq);
  /// True when a running sequence will publish the page that follows seq's
  /// cached prefix (its tokens are seq's so far): seq then waits for it
  /// instead of computing the same KV (n > 1 choices, a shared prefix that
  /// arrives in several requests at once).
  bool prefixInFlight(const Sequence &seq) const;
  void publishFullPages(Sequence &seq);
  /// Waits for a launched forward whose results nobody will read: no page
  /// may go back while the device can still write it.
  void dropLaunched();
  /// Ends a sequence: its last text (the decoder's pending bytes too, unless
  /// flushText is false), the reason, its pages back.
  void finish(Sequence &seq, SequenceUpdate &update, const std::string &reason, bool flushText = true);
  std::string takeText(Sequence &seq, bool final);

  Executor &executor_;
  BlockManager &pages_;
  SchedulerOptions options_;
  int64_t tokenBudget_, seqBudget_;
  uint64_t nextId_ = 0;
  std::deque<std::unique_ptr<Sequence>> waiting_;   // FIFO; preempted ones at the front
  std::vector<std::unique_ptr<Sequence>> running_;  // in admission order
  SchedulerCounters counters_;
  // The launched forward's sequences in batch order, and for each its
  // sequence where it samples a token (else null); empty when none is in flight.
  std::vector<Sequence *> scheduled_, sampled_;
  // A forward's sampling rows and results (kept to reuse their memory).
  std::vector<sample::RowSampling> rows_;
  std::vector<sample::LogitAdjustment> adjustments_;
  std::vector<sample::RowSample> samples_;
};

/// Runs all requests to completion (the offline path of `llmrun generate`).
std::vector<GenerationResult> generate(Executor &executor, BlockManager &pages,
                                       const std::vector<GenerationRequest> &requests,
                                       const SchedulerOptions &options);

} // namespace llmc::runtime
