#include "runtime/serve/Metrics.h"

#include <algorithm>
#include <sstream>

namespace llmc::serve {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

void Histogram::observe(double value) {
  counts_[size_t(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin())]++;
  sum_ += value;
  ++count_;
}

std::string Histogram::render(const std::string &name, const std::string &help) const {
  std::ostringstream out;
  out << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    cumulative += counts_[i];
    out << name << "_bucket{le=\"";
    if (i < bounds_.size())
      out << bounds_[i];
    else
      out << "+Inf";
    out << "\"} " << cumulative << "\n";
  }
  out << name << "_sum " << sum_ << "\n" << name << "_count " << count_ << "\n";
  return out.str();
}

Metrics::Metrics()
    : timeToFirstToken_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}),
      interTokenLatency_({0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
                          0.3, 0.4, 0.5, 0.75, 1, 2.5}),
      requestLatency_({0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480}) {}

void Metrics::countResponse(const std::string &endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++responses_[{endpoint, status}];
}

void Metrics::countTokens(int64_t prompt, int64_t generated) {
  std::lock_guard lock(mutex_);
  promptTokens_ += prompt;
  generatedTokens_ += generated;
}

void Metrics::observeTimeToFirstToken(double seconds) {
  std::lock_guard lock(mutex_);
  timeToFirstToken_.observe(seconds);
}

void Metrics::observeInterTokenLatency(double seconds) {
  std::lock_guard lock(mutex_);
  interTokenLatency_.observe(seconds);
}

void Metrics::observeRequestLatency(double seconds) {
  std::lock_guard lock(mutex_);
  requestLatency_.observe(seconds);
}

std::string Metrics::render(const LoopStats &loop) const {
  std::lock_guard lock(mutex_);
  std::ostringstream out;
  auto metric = [&](const char *name, const char *type, const char *help, auto value) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
        << name << " " << value << "\n";
  };
  out << "# HELP llmc_http_responses_total HTTP responses by endpoint and status.\n"
      << "# TYPE llmc_http_responses_total counter\n";
  for (const auto &[key, count] : responses_)
    out << "llmc_http_responses_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} "
        << count << "\n";
  metric("llmc_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", promptTokens_);
  metric("llmc_generation_tokens_total", "counter", "Generated tokens of finished requests.", generatedTokens_);
  out << timeToFirstToken_.render("llmc_time_to_first_token_seconds", "Time from arrival to the first token.")
      << interTokenLatency_.render("llmc_inter_token_latency_seconds", "Time between successive tokens of a request.")
      << requestLatency_.render("llmc_e2e_request_latency_seconds", "Time from arrival to the last token.");
  metric("llmc_num_requests_waiting", "gauge", "Requests waiting for admission (preempted ones included).",
         loop.waiting);
  metric("llmc_num_requests_running", "gauge", "Sequences admitted and running.", loop.running);
  metric("llmc_kv_cache_usage_ratio", "gauge", "Share of KV pages referenced by sequences.",
         loop.kv_pages ? double(loop.kv_pages_used) / loop.kv_pages : 0.0);
  metric("llmc_kv_cache_cached_pages", "gauge", "KV pages holding a cached prefix.", loop.kv_pages_cached);
  metric("llmc_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
         loop.counters.prompt_tokens);
  metric("llmc_prefix_cache_hits_total", "counter", "Prompt tokens served from the prefix cache.",
         loop.counters.cached_prompt_tokens);
  metric("llmc_prefix_cache_hit_rate", "gauge", "Share of prompt tokens served from the prefix cache.",
         loop.counters.prompt_tokens ? double(loop.counters.cached_prompt_tokens) / double(loop.counters.prompt_tokens)
                                     : 0.0);
  metric("llmc_num_preemptions_total", "counter", "Sequences preempted for KV pages (recomputed later).",
         loop.counters.preemptions);
  metric("llmc_forwards_total", "counter", "Forwards run.", loop.counters.forwards);
  metric("llmc_forward_seconds_total", "counter", "Time from each forward's launch to its collected results.",
         loop.forward_seconds);
  metric("llmc_host_seconds_between_forwards_total", "counter",
         "Time from a forward's collected results to the next forward's launch while work waited "
         "(the device idles for host work).",
         loop.host_seconds_between_forwards);
  return out.str();
}

} // namespace llmc::serve
