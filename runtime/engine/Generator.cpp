#include "runtime/engine/Generator.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>
#include <string_view>
#include <stdexcept>

namespace llmc::runtime {
namespace {

int64_t pagesFor(int64_t tokens, int64_t page_size) { return (tokens + page_size - 1) / page_size; }

// One request in flight.
struct Sequence {
  const GenerationRequest *request;
  GenerationResult *result;
  std::unique_ptr<sample::Sampler> sampler;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  std::vector<int32_t> pages;   // reserved for prompt + max_tokens
  int64_t computed = 0;         // tokens whose KV is in the cache
  bool done = false;
  std::optional<text::IncrementalDecoder> decoder;  // with a tokenizer

  int64_t generated() const { return int64_t(tokens.size() - request->prompt.size()); }
};

// Appends the token's text; true when a stop string now occurs in the output,
// which is then cut where the stop string begins.
bool appendText(Sequence &seq, int32_t token) {
  if (!seq.decoder)
    return false;
  std::string &text = seq.result->text;
  const size_t before = text.size();
  text += seq.decoder->push(token);
  for (const std::string &stop : seq.request->stop) {
    // Only a match that ends in the new text is new.
    const size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
    if (size_t at = text.find(stop, from); at != std::string::npos) {
      text.resize(at);
      return true;
    }
  }
  return false;
}

void finish(Sequence &seq, BlockManager &pages, const char *reason) {
  if (seq.decoder && seq.result->finish_reason.empty() && std::string_view(reason) != "stop-string")
    seq.result->text += seq.decoder->flush();
  seq.result->finish_reason = std::string_view(reason) == "stop-string" ? "stop" : reason;
  seq.done = true;
  for (int32_t page : seq.pages)
    pages.release(page);
  seq.pages.clear();
}

} // namespace

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
  if (pagesFor(total, executor.pageSize()) > executor.numPages())
    throw std::invalid_argument("the request needs " +
                                std::to_string(pagesFor(total, executor.pageSize())) +
                                " KV pages, the cache has " + std::to_string(executor.numPages()));
}

std::vector<GenerationResult> generate(Executor &executor, BlockManager &pages,
                                       const std::vector<GenerationRequest> &requests,
                                       const GeneratorOptions &options) {
  for (const GenerationRequest &request : requests) {
    validateRequest(request, executor);
    if (!request.stop.empty() && !options.tokenizer)
      throw std::invalid_argument("stop strings need the engine's tokenizer.json");
  }
  for (int32_t eos : options.eos_token_ids)
    if (eos < 0 || eos >= executor.vocabSize())
      throw std::invalid_argument("end-of-sequence token " + std::to_string(eos) +
                                  " is outside the vocabulary");
  const int64_t budget = options.tokens_per_forward > 0
                             ? std::min(options.tokens_per_forward, executor.maxTokensPerForward())
                             : executor.maxTokensPerForward();
  const int32_t pageSize = executor.pageSize();
  const size_t vocab = size_t(executor.vocabSize());

  std::vector<GenerationResult> results(requests.size());
  std::vector<Sequence> sequences;
  for (size_t i = 0; i < requests.size(); ++i)
    sequences.push_back({&requests[i], &results[i],
                         std::make_unique<sample::Sampler>(requests[i].sampling, options.seed + i),
                         requests[i].prompt, {}, 0, false, std::nullopt});
  if (options.tokenizer)
    for (Sequence &seq : sequences)
      seq.decoder.emplace(*options.tokenizer);

  // Pages of unfinished sequences go back whatever ends the loop (an error
  // in a forward or a sampler included).
  struct ReleaseOnExit {
    std::vector<Sequence> &sequences;
    BlockManager &pages;
    ~ReleaseOnExit() {
      for (Sequence &seq : sequences)
        for (int32_t page : seq.pages)
          pages.release(page);
    }
  } releaseOnExit{sequences, pages};

  size_t admitted = 0;
  std::vector<float> logits, row;
  std::vector<int32_t> greedyTokens;
  for (;;) {
    // Admit waiting requests in order while their whole reservation fits.
    while (admitted < sequences.size()) {
      Sequence &seq = sequences[admitted];
      const int64_t needed = pagesFor(int64_t(seq.request->prompt.size()) + seq.request->max_tokens, pageSize);
      if (needed > pages.numFree())
        break;
      for (int64_t p = 0; p < needed; ++p)
        seq.pages.push_back(*pages.allocate());
      ++admitted;
    }

    // Decodes first (one token each), then prompt chunks within the budget.
    ForwardBatch batch;
    std::vector<Sequence *> sampled;  // sequences whose chunk ends at their last token
    int64_t left = budget;
    for (int pass = 0; pass < 2; ++pass)
      for (size_t i = 0; i < admitted && left > 0 && batch.numSeqs() < executor.maxSeqsPerForward(); ++i) {
        Sequence &seq = sequences[i];
        const int64_t pending = int64_t(seq.tokens.size()) - seq.computed;
        if (seq.done || pending == 0 || (pass == 0) != (pending == 1))
          continue;  // pass 0 takes decodes, pass 1 prompt chunks
        const int64_t chunk = std::min(pending, left);
        batch.addChunk({seq.tokens.data() + seq.computed, size_t(chunk)}, int32_t(seq.computed),
                       seq.pages, pageSize);
        seq.computed += chunk;
        left -= chunk;
        sampled.push_back(seq.computed == int64_t(seq.tokens.size()) ? &seq : nullptr);
      }
    if (batch.numSeqs() == 0) {
      if (admitted == sequences.size())
        break;
      throw std::logic_error("no request can be admitted although the KV cache is idle");
    }

    // When every sequence picks greedily with nothing to mask or report, the
    // tokens are chosen on the device and only they come back.
    const bool deviceGreedy = std::all_of(sampled.begin(), sampled.end(), [](const Sequence *seq) {
      return !seq || (seq->request->sampling.temperature == 0 && seq->request->sampling.logprobs == 0 &&
                      seq->request->sampling.banned_tokens.empty() &&
                      seq->generated() >= seq->request->min_tokens);
    });
    if (deviceGreedy)
      executor.forwardGreedy(batch, greedyTokens);
    else
      executor.forward(batch, logits);
    for (size_t s = 0; s < sampled.size(); ++s) {
      Sequence *seq = sampled[s];
      if (!seq)
        continue;  // a prompt chunk that is not the last: nothing to sample yet
      sample::SampleResult result;
      if (deviceGreedy) {
        result.token = greedyTokens[s];
        result.logprob = std::numeric_limits<float>::quiet_NaN();  // not computed, not asked for
      } else {
        row.assign(logits.begin() + long(s * vocab), logits.begin() + long((s + 1) * vocab));
        if (seq->generated() < seq->request->min_tokens)
          for (int32_t eos : options.eos_token_ids)
            row[size_t(eos)] = -std::numeric_limits<float>::infinity();
        result = seq->sampler->sample(row);
      }
      seq->tokens.push_back(result.token);
      seq->result->tokens.push_back(result.token);
      seq->result->samples.push_back(std::move(result));
      const int32_t token = seq->tokens.back();
      const bool eos = std::count(options.eos_token_ids.begin(), options.eos_token_ids.end(), token) > 0;
      const bool stopToken =
          std::count(seq->request->stop_token_ids.begin(), seq->request->stop_token_ids.end(), token) > 0;
      if ((eos && !seq->request->ignore_eos) || stopToken)
        finish(*seq, pages, "stop");  // the stop token's own text is not output
      else if (appendText(*seq, token))
        finish(*seq, pages, "stop-string");
      else if (seq->generated() >= seq->request->max_tokens)
        finish(*seq, pages, "length");
    }
  }
  return results;
}

} // namespace llmc::runtime
