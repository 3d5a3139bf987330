#include "runtime/sched/Scheduler.h"

#include "runtime/support/Math.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <utility>

namespace llmc::runtime {
namespace {

size_t longestStop(const GenerationRequest &request) {
  size_t longest = 0;
  for (const std::string &stop : request.stop)
    longest = std::max(longest, stop.size());
  return longest;
}

} // namespace

struct Scheduler::Sequence {
  Sequence(uint64_t id, GenerationRequest request, uint64_t default_seed)
      : id(id), request(std::move(request)),
        sampler(this->request.sampling, default_seed, this->request.prompt),
        tokens(this->request.prompt) {}

  uint64_t id;
  GenerationRequest request;
  sample::Sampler sampler;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  std::vector<int32_t> pages;   // the page table, covering at least `computed` tokens
  std::vector<uint64_t> pageKeys;  // prefix keys of the leading full pages (published or matched)
  int64_t computed = 0;            // tokens whose KV is in the cache
  bool admitted = false;           // once admitted (a preempted sequence stays admitted)
  int64_t cachedTokens = 0;
  std::optional<text::IncrementalDecoder> decoder;
  std::string text;    // output so far, cut before any stop string
  size_t emitted = 0;  // bytes of text already handed out

  int64_t generated() const { return int64_t(tokens.size() - request.prompt.size()); }
};

void validateRequest(const GenerationRequest &request, const Executor &executor) {
  if (request.prompt.empty())
    throw std::invalid_argument("the prompt is empty");
  if (request.max_tokens < 1)
    throw std::invalid_argument("max_tokens must be at least 1, got " + std::to_string(request.max_tokens));
  for (const std::string &stop : request.stop)
    if (stop.empty())
      throw std::invalid_argument("stop strings must not be empty");
  for (int32_t id : request.stop_token_ids)
    if (id < 0 || id >= executor.vocabSize())
      throw std::invalid_argument("stop token id " + std::to_string(id) + " is outside the vocabulary");
  if (request.min_tokens < 0 || request.min_tokens > request.max_tokens)
    throw std::invalid_argument("min_tokens must be in [0, max_tokens], got " +
                                std::to_string(request.min_tokens));
  const int64_t total = int64_t(request.prompt.size()) + request.max_tokens;
  if (total > executor.maxSeqLen())
    throw std::invalid_argument("prompt of " + std::to_string(request.prompt.size()) +
                                " tokens plus max_tokens " + std::to_string(request.max_tokens) +
                                " exceeds the engine's max sequence length " +
                                std::to_string(executor.maxSeqLen()));
  for (int32_t id : request.prompt)
    if (id < 0 || id >= executor.vocabSize())
      throw std::invalid_argument("prompt token id " + std::to_string(id) +
                                  " is outside the vocabulary [0, " +
                                  std::to_string(executor.vocabSize()) + ")");
  sample::validate(request.sampling, int(executor.vocabSize()));
  if (ceilDiv(total, executor.pageSize()) > executor.numPages())
    throw std::invalid_argument("the request needs " +
                                std::to_string(ceilDiv(total, executor.pageSize())) +
                                " KV pages, the cache has " + std::to_string(executor.numPages()));
}

Scheduler::Scheduler(Executor &executor, BlockManager &pages, const SchedulerOptions &options)
    : executor_(executor), pages_(pages), options_(options) {
  for (int32_t eos : options.eos_token_ids)
    if (eos < 0 || eos >= executor.vocabSize())
      throw std::invalid_argument("end-of-sequence token " + std::to_string(eos) +
                                  " is outside the vocabulary");
  // A budget above the engine's own limits (fixed by llmc compile) is an
  // error, not a silent cut.
  auto limit = [](int64_t wanted, int64_t most, const char *what) {
    if (wanted > most)
      throw std::invalid_argument(std::string(what) + " " + std::to_string(wanted) + " exceeds the engine's " +
                                  std::to_string(most) + " (llmc compile --max-" + what + ")");
    return wanted > 0 ? wanted : most;
  };
  tokenBudget_ = limit(options.tokens_per_forward, executor.maxTokensPerForward(), "tokens-per-forward");
  seqBudget_ = limit(options.seqs_per_forward, executor.maxSeqsPerForward(), "seqs-per-forward");
}

Scheduler::~Scheduler() {
  dropLaunched();
  for (auto &seq : running_)
    releasePages(*seq);
  for (auto &seq : waiting_)
    releasePages(*seq);
}

uint64_t Scheduler::add(GenerationRequest request) {
  validateRequest(request, executor_);
  if (!request.stop.empty() && !options_.tokenizer)
    throw std::invalid_argument("stop strings need the engine's tokenizer.json");
  const uint64_t id = nextId_++;
  auto seq = std::make_unique<Sequence>(id, std::move(request), options_.seed + id);
  if (options_.tokenizer)
    seq->decoder.emplace(*options_.tokenizer);
  waiting_.push_back(std::move(seq));
  return id;
}

bool Scheduler::abort(uint64_t id) {
  if (inFlight())  // its pages are being written
    throw std::logic_error("Scheduler::abort() while a forward is in flight");
  auto matches = [id](const std::unique_ptr<Sequence> &seq) { return seq->id == id; };
  if (auto at = std::find_if(waiting_.begin(), waiting_.end(), matches); at != waiting_.end()) {
    releasePages(**at);
    waiting_.erase(at);
    return true;
  }
  if (auto at = std::find_if(running_.begin(), running_.end(), matches); at != running_.end()) {
    releasePages(**at);
    running_.erase(at);
    return true;
  }
  return false;
}

bool Scheduler::ensurePages(Sequence &seq, int64_t tokens) {
  while (int64_t(seq.pages.size()) < ceilDiv(tokens, executor_.pageSize())) {
    std::optional<int32_t> page = pages_.allocate();
    if (!page)
      return false;
    seq.pages.push_back(*page);
  }
  return true;
}

void Scheduler::releasePages(Sequence &seq) {
  for (int32_t page : seq.pages)
    pages_.release(page);
  seq.pages.clear();
  seq.pageKeys.clear();
  seq.computed = 0;
}

void Scheduler::preempt(Sequence &seq) {
  releasePages(seq);
  ++counters_.preemptions;
  auto at = std::find_if(running_.begin(), running_.end(),
                         [&](const std::unique_ptr<Sequence> &s) { return s.get() == &seq; });
  waiting_.push_front(std::move(*at));
  running_.erase(at);
}

void Scheduler::matchCachedPrefix(Sequence &seq) {
  if (!options_.prefix_caching)
    return;
  // At least the last token is computed again: its logits are needed.
  const int64_t pageSize = executor_.pageSize();
  const int64_t candidates = (int64_t(seq.tokens.size()) - 1) / pageSize;
  uint64_t parent = BlockManager::kRootKey;
  for (int64_t j = 0; j < candidates; ++j) {
    std::span<const int32_t> tokens(seq.tokens.data() + j * pageSize, size_t(pageSize));
    std::optional<int32_t> page = pages_.lookup(parent, tokens);
    if (!page)
      break;
    seq.pages.push_back(*page);
    parent = BlockManager::pageKey(parent, tokens);
    seq.pageKeys.push_back(parent);
  }
  seq.computed = int64_t(seq.pages.size()) * pageSize;
}

bool Scheduler::prefixInFlight(const Sequence &seq) const {
  if (!options_.prefix_caching)
    return false;
  // The page after seq's cached prefix, if seq could take it from the cache.
  const int64_t pageSize = executor_.pageSize();
  const int64_t next = int64_t(seq.pages.size());
  const int64_t end = (next + 1) * pageSize;
  if (end > int64_t(seq.tokens.size()) - 1)
    return false;
  return std::any_of(running_.begin(), running_.end(), [&](const std::unique_ptr<Sequence> &other) {
    return int64_t(other->pageKeys.size()) <= next && int64_t(other->tokens.size()) >= end &&
           std::equal(seq.tokens.begin(), seq.tokens.begin() + end, other->tokens.begin());
  });
}

void Scheduler::publishFullPages(Sequence &seq) {
  if (!options_.prefix_caching)
    return;
  const int64_t pageSize = executor_.pageSize();
  for (int64_t j = int64_t(seq.pageKeys.size()); j < seq.computed / pageSize; ++j) {
    const uint64_t parent = j == 0 ? BlockManager::kRootKey : seq.pageKeys[size_t(j - 1)];
    std::span<const int32_t> tokens(seq.tokens.data() + j * pageSize, size_t(pageSize));
    pages_.publish(seq.pages[size_t(j)], parent, tokens);
    seq.pageKeys.push_back(BlockManager::pageKey(parent, tokens));
  }
}

std::string Scheduler::takeText(Sequence &seq, bool final) {
  // Text that may be the start of a stop string waits for the next token.
  size_t end = seq.text.size();
  if (!final) {
    const size_t longest = longestStop(seq.request);
    end -= std::min(end - seq.emitted, longest > 0 ? longest - 1 : 0);
    while (end > seq.emitted && (static_cast<unsigned char>(seq.text[end]) & 0xC0) == 0x80)
      --end;  // never split a UTF-8 sequence
  }
  std::string delta = seq.text.substr(seq.emitted, end - seq.emitted);
  seq.emitted = end;
  return delta;
}

void Scheduler::finish(Sequence &seq, SequenceUpdate &update, const std::string &reason, bool flushText) {
  if (seq.decoder && flushText)
    seq.text += seq.decoder->flush();
  update.finished = true;
  update.finish_reason = reason;
  update.text += takeText(seq, /*final=*/true);
  releasePages(seq);
}

std::vector<SequenceUpdate> Scheduler::step() {
  if (!launch())
    return {};
  return complete();
}

bool Scheduler::launch() {
  if (inFlight())
    throw std::logic_error("Scheduler::launch() while a forward is in flight");
  const int32_t pageSize = executor_.pageSize();
  ForwardBatch batch;
  std::vector<Sequence *> scheduled;  // in batch order
  int64_t left = tokenBudget_;
  // The next chunk of a sequence's pending tokens: what the budget leaves.
  auto nextChunk = [&](const Sequence &seq) { return std::min(int64_t(seq.tokens.size()) - seq.computed, left); };
  auto schedule = [&](Sequence &seq, int64_t chunk) {
    batch.addChunk({seq.tokens.data() + seq.computed, size_t(chunk)}, int32_t(seq.computed),
                   seq.pages, pageSize);
    seq.computed += chunk;
    left -= chunk;
    scheduled.push_back(&seq);
  };

  // Running sequences, oldest first; the newest give way when pages run out.
  bool preempted = false;
  for (size_t i = 0; i < running_.size() && left > 0 && batch.numSeqs() < seqBudget_;) {
    Sequence &seq = *running_[i];
    const int64_t chunk = nextChunk(seq);
    bool placed = true;
    while (!ensurePages(seq, seq.computed + chunk)) {
      preempted = true;
      Sequence &victim = *running_.back();
      const bool self = &victim == &seq;
      preempt(victim);
      if (self) {
        placed = false;
        break;
      }
    }
    if (!placed)
      break;
    schedule(seq, chunk);
    ++i;
  }

  // Waiting requests in order, while their whole prompt fits and fewer
  // sequences run than one forward can take (no admission in a step that had
  // to preempt: the pages are short).
  while (!preempted && !waiting_.empty() && left > 0 && batch.numSeqs() < seqBudget_ &&
         int64_t(running_.size()) < seqBudget_) {
    Sequence &seq = *waiting_.front();
    matchCachedPrefix(seq);
    const int64_t needed = ceilDiv(int64_t(seq.tokens.size()), pageSize) - int64_t(seq.pages.size());
    if (needed > pages_.numFree() || prefixInFlight(seq)) {
      releasePages(seq);
      break;
    }
    if (!seq.admitted) {
      seq.admitted = true;
      seq.cachedTokens = seq.computed;
      counters_.prompt_tokens += int64_t(seq.tokens.size());
      counters_.cached_prompt_tokens += seq.computed;
    }
    const int64_t chunk = nextChunk(seq);
    if (!ensurePages(seq, seq.computed + chunk))
      throw std::logic_error("KV pages counted free could not be allocated");
    schedule(seq, chunk);
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  if (scheduled.empty()) {
    if (!idle())
      throw std::logic_error("no request can be scheduled although the KV cache is idle");
    return false;
  }

  // Sequences whose chunk ends at their last token get a new token.
  std::vector<Sequence *> sampled;
  for (Sequence *seq : scheduled)
    sampled.push_back(seq->computed == int64_t(seq->tokens.size()) ? seq : nullptr);
  // Every row is sampled on the device (prompt chunks that are not the last
  // get a greedy row nobody reads); only the results come back.
  rows_.clear();
  adjustments_.clear();
  for (Sequence *seq : sampled) {
    if (!seq) {
      rows_.push_back(sample::RowSampling{});
      continue;
    }
    const bool banEos = seq->generated() < seq->request.min_tokens;
    rows_.push_back(seq->sampler.prepare(
        adjustments_, banEos ? std::span<const int32_t>(options_.eos_token_ids) : std::span<const int32_t>{}));
  }
  executor_.launchSample(batch, rows_, adjustments_);
  ++counters_.forwards;
  counters_.computed_tokens += batch.numTokens();
  scheduled_ = std::move(scheduled);
  sampled_ = std::move(sampled);
  return true;
}

std::vector<SequenceUpdate> Scheduler::complete() {
  if (!inFlight())
    throw std::logic_error("Scheduler::complete() with no forward in flight");
  const std::vector<Sequence *> scheduled = std::exchange(scheduled_, {});
  const std::vector<Sequence *> sampled = std::exchange(sampled_, {});
  executor_.collectSamples(samples_);
  // Only KV that was computed goes into the prefix cache.
  for (Sequence *seq : scheduled)
    publishFullPages(*seq);

  std::vector<SequenceUpdate> updates;
  for (size_t s = 0; s < sampled.size(); ++s) {
    Sequence *seq = sampled[s];
    if (!seq)
      continue;
    SequenceUpdate update{seq->id, std::nullopt, "", false, "", "", seq->cachedTokens};
    if (samples_[s].token < 0) {
      update.error = "no token can be sampled: all logits are -inf or NaN";
      finish(*seq, update, "error");
      updates.push_back(std::move(update));
      continue;
    }
    sample::SampleResult result = sample::toSampleResult(samples_[s]);
    seq->sampler.accept(result.token);
    const int32_t token = result.token;
    seq->tokens.push_back(token);
    update.sample = std::move(result);
    const GenerationRequest &request = seq->request;
    const bool eos = std::count(options_.eos_token_ids.begin(), options_.eos_token_ids.end(), token) > 0;
    const bool stopToken = std::count(request.stop_token_ids.begin(), request.stop_token_ids.end(), token) > 0;
    if ((eos && !request.ignore_eos) || stopToken) {
      finish(*seq, update, "stop");  // the stop token's own text is not output
    } else {
      bool stopString = false;
      if (seq->decoder) {
        const size_t before = seq->text.size();
        seq->text += seq->decoder->push(token);
        for (const std::string &stop : request.stop) {
          // Only a match that ends in the new text is new.
          const size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
          if (size_t at = seq->text.find(stop, from); at != std::string::npos) {
            seq->text.resize(std::min(at, seq->text.size()));
            stopString = true;
          }
        }
        seq->emitted = std::min(seq->emitted, seq->text.size());
      }
      if (stopString)
        finish(*seq, update, "stop", /*flushText=*/false);  // the text ends where the stop string began
      else if (seq->generated() >= request.max_tokens)
        finish(*seq, update, "length");
      else
        update.text = takeText(*seq, /*final=*/false);
    }
    updates.push_back(std::move(update));
  }
  std::erase_if(running_, [&](const std::unique_ptr<Sequence> &seq) {
    return std::any_of(updates.begin(), updates.end(),
                       [&](const SequenceUpdate &u) { return u.finished && u.id == seq->id; });
  });
  return updates;
}

void Scheduler::dropLaunched() {
  if (!inFlight())
    return;
  scheduled_.clear();
  sampled_.clear();
  try {
    executor_.collectSamples(samples_);
  } catch (const std::exception &) {  // a failed forward writes nothing more either
  }
}

std::vector<SequenceUpdate> Scheduler::failAll(const std::string &message) {
  dropLaunched();
  std::vector<SequenceUpdate> updates;
  auto fail = [&](Sequence &seq) {
    SequenceUpdate update{seq.id, std::nullopt, "", false, "", message, seq.cachedTokens};
    finish(seq, update, "error");
    updates.push_back(std::move(update));
  };
  for (auto &seq : running_)
    fail(*seq);
  for (auto &seq : waiting_)
    fail(*seq);
  running_.clear();
  waiting_.clear();
  return updates;
}

std::vector<GenerationResult> generate(Executor &executor, BlockManager &pages,
                                       const std::vector<GenerationRequest> &requests,
                                       const SchedulerOptions &options) {
  Scheduler scheduler(executor, pages, options);
  for (const GenerationRequest &request : requests)
    scheduler.add(request);
  std::vector<GenerationResult> results(requests.size());
  while (!scheduler.idle())
    for (SequenceUpdate &update : scheduler.step()) {
      GenerationResult &result = results[update.id];
      if (update.sample) {
        result.tokens.push_back(update.sample->token);
        result.samples.push_back(std::move(*update.sample));
      }
      result.text += update.text;
      result.cached_tokens = update.cached_tokens;
      if (update.finished) {
        if (update.finish_reason == "error")
          throw std::runtime_error("request " + std::to_string(update.id) + ": " + update.error);
        result.finish_reason = update.finish_reason;
      }
    }
  return results;
}

} // namespace llmc::runtime
