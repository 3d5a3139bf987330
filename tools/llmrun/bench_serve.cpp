// llmrun bench-serve: the serving engine under a synthetic workload, in this
// process (the scheduler and executor that `llmrun serve` runs, without
// HTTP). Requests are random-token prompts, optionally behind one shared
// prefix, generated with ignore_eos (greedily, or sampled with the given
// temperature, top-k and top-p), arriving all at once, at a
// fixed concurrency or as a Poisson process.

#include "runtime/sched/Scheduler.h"
#include "tools/llmrun/bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <stdexcept>
#include <thread>

namespace llmc {
namespace {

using Clock = std::chrono::steady_clock;

struct Percentiles {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
};

// 2.5 rather than 2.500000.
std::string shortest(double x) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", x);
  return text;
}

Percentiles percentiles(std::vector<double> values) {
  Percentiles out;
  if (values.empty())
    return out;
  std::sort(values.begin(), values.end());
  for (double v : values)
    out.mean += v / double(values.size());
  auto at = [&](double q) { return values[std::min(values.size() - 1, size_t(q * double(values.size())))]; };
  out.p50 = at(0.50);
  out.p90 = at(0.90);
  out.p99 = at(0.99);
  return out;
}

} // namespace

int runBenchServe(const BenchServeOptions &o) {
  if (o.num_requests < 1 || o.input_len < 1 || o.output_len < 1 || o.shared_prefix_len < 0 || o.concurrency < 0 ||
      o.request_rate < 0)
    throw std::invalid_argument("bench-serve: requests and lengths must be positive, the rest non-negative");
  Engine engine(o.engine);
  runtime::Executor &executor = *engine.executor;
  runtime::SchedulerOptions options;
  options.tokens_per_forward = o.tokens_per_forward;
  options.seqs_per_forward = o.seqs_per_forward;
  options.prefix_caching = o.prefix_caching;
  runtime::Scheduler scheduler(executor, *engine.pages, options);

  // The workload: every prompt is the shared prefix plus its own tokens.
  std::mt19937_64 random(o.seed);
  auto token = [&] { return int32_t(random() % uint64_t(executor.vocabSize())); };
  std::vector<int32_t> prefix(size_t(o.shared_prefix_len));
  std::generate(prefix.begin(), prefix.end(), token);
  std::vector<runtime::GenerationRequest> requests(size_t(o.num_requests));
  for (size_t r = 0; r < requests.size(); ++r) {
    runtime::GenerationRequest &request = requests[r];
    request.prompt = prefix;
    for (int64_t i = 0; i < o.input_len; ++i)
      request.prompt.push_back(token());
    request.max_tokens = int(o.output_len);
    request.ignore_eos = true;
    request.sampling.temperature = o.temperature;
    request.sampling.top_p = o.top_p;
    request.sampling.top_k = o.top_k;
    request.sampling.seed = r;
    sample::validate(request.sampling, int(executor.vocabSize()));
  }
  std::vector<double> arrival(requests.size(), 0.0);  // seconds after the start
  if (o.request_rate > 0) {
    std::exponential_distribution<double> gap(o.request_rate);
    for (size_t i = 1; i < arrival.size(); ++i)
      arrival[i] = arrival[i - 1] + gap(random);
  }

  char sampling[96] = "greedy";
  if (o.temperature != 0)
    std::snprintf(sampling, sizeof sampling, "temperature %g, top-k %d, top-p %g", double(o.temperature), o.top_k,
                  double(o.top_p));
  std::printf("bench-serve: %lld requests, %lld%s input + %lld output tokens, %s, %s, prefix caching %s, %s backend, "
              "KV cache %lld tokens\n",
              (long long)o.num_requests, (long long)o.input_len,
              o.shared_prefix_len ? (" (after a shared " + std::to_string(o.shared_prefix_len) + "-token prefix)").c_str()
                                  : "",
              (long long)o.output_len,
              sampling,
              o.concurrency ? ("concurrency " + std::to_string(o.concurrency)).c_str()
              : o.request_rate > 0 ? ("Poisson arrivals at " + shortest(o.request_rate) + " requests/s").c_str()
                                   : "all at once",
              o.prefix_caching ? "on" : "off", std::string(engine.backend->name()).c_str(),
              (long long)(engine.pages->numPages() * executor.pageSize()));

  // Per request: when it was submitted and when its latest token came (< 0: none yet).
  std::vector<double> submitted(requests.size()), lastToken(requests.size(), -1.0);
  std::vector<double> timeToFirstToken, interToken, latency;
  std::vector<size_t> byId;  // scheduler id -> request
  size_t next = 0, inFlight = 0, finished = 0;
  int64_t outputTokens = 0;
  const double forwardBefore = executor.forwardSeconds();
  const Clock::time_point start = Clock::now();
  auto now = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  while (finished < requests.size()) {
    // Submit what has arrived (and fits the concurrency).
    while (next < requests.size() && arrival[next] <= now() && (o.concurrency == 0 || int64_t(inFlight) < o.concurrency)) {
      byId.push_back(next);
      if (scheduler.add(requests[next]) != byId.size() - 1)
        throw std::logic_error("bench-serve: unexpected scheduler id");
      submitted[next] = now();
      ++next;
      ++inFlight;
    }
    if (scheduler.idle()) {  // wait for the next arrival
      std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, arrival[next] - now())));
      continue;
    }
    for (const runtime::SequenceUpdate &update : scheduler.step()) {
      const size_t r = byId[update.id];
      if (!update.sample)
        throw std::runtime_error("bench-serve: request failed: " + update.error);
      const double t = now();
      if (lastToken[r] < 0) {
        timeToFirstToken.push_back((t - submitted[r]) * 1e3);
      } else {
        interToken.push_back((t - lastToken[r]) * 1e3);
      }
      lastToken[r] = t;
      ++outputTokens;
      if (update.finished) {
        latency.push_back((t - submitted[r]) * 1e3);
        ++finished;
        --inFlight;
      }
    }
  }
  const double seconds = now();
  const double hostSeconds = seconds - (executor.forwardSeconds() - forwardBefore);
  const runtime::SchedulerCounters &c = scheduler.counters();

  const Percentiles ttft = percentiles(timeToFirstToken), itl = percentiles(interToken), e2e = percentiles(latency);
  std::printf("\n| metric | value |\n| --- | --- |\n");
  std::printf("| duration | %.2f s |\n", seconds);
  std::printf("| request throughput | %.2f requests/s |\n", double(finished) / seconds);
  std::printf("| output token throughput | %.0f tokens/s |\n", double(outputTokens) / seconds);
  std::printf("| total token throughput | %.0f tokens/s |\n",
              double(outputTokens + c.prompt_tokens) / seconds);
  std::printf("| TTFT mean / p50 / p90 / p99 | %.1f / %.1f / %.1f / %.1f ms |\n", ttft.mean, ttft.p50, ttft.p90,
              ttft.p99);
  std::printf("| inter-token latency mean / p50 / p90 / p99 | %.2f / %.2f / %.2f / %.2f ms |\n", itl.mean, itl.p50,
              itl.p90, itl.p99);
  std::printf("| request latency mean / p50 / p90 / p99 | %.0f / %.0f / %.0f / %.0f ms |\n", e2e.mean, e2e.p50,
              e2e.p90, e2e.p99);
  std::printf("| prompt tokens from the prefix cache | %lld of %lld (%.1f%%) |\n", (long long)c.cached_prompt_tokens,
              (long long)c.prompt_tokens, c.prompt_tokens ? 100.0 * double(c.cached_prompt_tokens) / double(c.prompt_tokens) : 0.0);
  std::printf("| forwards, tokens per forward | %lld, %.0f |\n", (long long)c.forwards,
              c.forwards ? double(c.computed_tokens) / double(c.forwards) : 0.0);
  std::printf("| preemptions | %lld |\n", (long long)c.preemptions);
  std::printf("| host time between forwards (device idle) | %.2f s, %.1f%% of the run, %.3f ms per forward |\n",
              hostSeconds, 100.0 * hostSeconds / seconds, c.forwards ? hostSeconds * 1e3 / double(c.forwards) : 0.0);
  return 0;
}

} // namespace llmc
