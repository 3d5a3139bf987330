// Server metrics in the Prometheus text format (/metrics).
#pragma once

#include "runtime/serve/EngineLoop.h"

#include <array>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace llmc::serve {

/// A Prometheus histogram with fixed bucket bounds (seconds).
class Histogram {
public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  /// The _bucket, _sum and _count lines of `name`.
  std::string render(const std::string &name, const std::string &help) const;

private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
public:
  Metrics();
  void countResponse(const std::string &endpoint, int status);
  void countTokens(int64_t prompt, int64_t generated);
  void observeTimeToFirstToken(double seconds);
  void observeInterTokenLatency(double seconds);
  void observeRequestLatency(double seconds);

  /// Everything, with the engine loop's gauges and counters.
  std::string render(const LoopStats &loop) const;

private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> responses_;  // (endpoint, status) -> count
  int64_t promptTokens_ = 0, generatedTokens_ = 0;
  Histogram timeToFirstToken_, interTokenLatency_, requestLatency_;
};

} // namespace llmc::serve
