#include "runtime/sample/Sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace llmc::sample {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

template <typename T>
[[noreturn]] void invalid(const char* name, const std::string& expected, T got) {
  std::ostringstream os;
  os << "SamplingParams." << name << " must be " << expected << " (got " << got << ")";
  throw std::invalid_argument(os.str());
}

// A logit's place in the order: larger logits get smaller ranks. The float's
// bits are mapped to an integer that sorts like the float, then flipped.
uint32_t rank(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x == 0.0f ? 0.0f : x);  // -0 ranks as +0
  return ~((bits & 0x80000000u) ? ~bits : bits | 0x80000000u);
}

// The first token in the order (rank ascending, then id ascending) whose
// cumulative weight exceeds `target` (or reaches it, if inclusive), among the
// tokens of positive weight; the last of those if rounding leaves the target
// beyond the total. weight(i) is 0 or positive, and positive for some token.
//
// A radix descent over the rank's bits (12, 8, 8, then 4 at a time): sum the
// weight of each bucket, in token-id order, step into the bucket where the
// cumulative weight gets there, and repeat on its tokens; the tokens left in
// the end share one logit and are walked in id order.
template <typename Weight>
int32_t selectInOrder(std::span<const uint32_t> rank, Weight weight, double target, bool inclusive) {
  auto reaches = [&](double cumulative) {
    return inclusive ? cumulative >= target : cumulative > target;
  };
  std::vector<int32_t> tokens;  // the current bucket's tokens, ascending id
  bool everyToken = true;       // ... or the whole vocabulary, at first
  auto forEachToken = [&](auto f) {
    if (everyToken)
      for (int32_t i = 0; i < int32_t(rank.size()); ++i) f(i);
    else
      for (int32_t i : tokens) f(i);
  };
  for (auto [shift, bits] : {std::pair{20, 12}, {12, 8}, {4, 8}, {0, 4}}) {
    auto bucket = [&](int32_t i) { return (rank[i] >> shift) & ((1u << bits) - 1); };
    std::vector<double> mass(size_t{1} << bits);
    forEachToken([&](int32_t i) { mass[bucket(i)] += weight(i); });
    unsigned last = unsigned(mass.size()) - 1;
    while (mass[last] == 0) --last;
    unsigned b = 0;
    double before = 0;
    for (; b < last && (mass[b] == 0 || !reaches(before + mass[b])); ++b) before += mass[b];
    target -= before;
    std::vector<int32_t> inBucket;
    forEachToken([&](int32_t i) {
      if (bucket(i) == b && weight(i) > 0) inBucket.push_back(i);
    });
    tokens = std::move(inBucket);
    everyToken = false;
  }
  for (size_t j = 0; j + 1 < tokens.size(); ++j) {
    if (reaches(weight(tokens[j]))) return tokens[j];
    target -= weight(tokens[j]);
  }
  return tokens.back();
}

}  // namespace

void validate(const SamplingParams& p, int vocab_size) {
  if (!(p.temperature >= 0)) invalid("temperature", ">= 0 (0 = greedy)", p.temperature);
  if (p.top_k < -1) invalid("top_k", ">= 1, or 0 or -1 for off", p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1)) invalid("top_p", "in (0, 1]", p.top_p);
  if (!(p.min_p >= 0 && p.min_p <= 1)) invalid("min_p", "in [0, 1]", p.min_p);
  if (p.logprobs < 0 || p.logprobs > 20) invalid("logprobs", "in [0, 20]", p.logprobs);
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2))
    invalid("presence_penalty", "in [-2, 2]", p.presence_penalty);
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2))
    invalid("frequency_penalty", "in [-2, 2]", p.frequency_penalty);
  if (!(p.repetition_penalty > 0 && p.repetition_penalty <= 2))
    invalid("repetition_penalty", "in (0, 2]", p.repetition_penalty);
  for (int32_t token : p.banned_tokens)
    if (token < 0 || token >= vocab_size)
      invalid("banned_tokens", "token ids in the vocabulary [0, " + std::to_string(vocab_size) + ")",
              token);
}

RowSample sampleRow(std::span<float> x, const RowSampling& row,
                    std::span<const LogitAdjustment> adjustments) {
  const auto V = static_cast<int32_t>(x.size());
  RowSample result{};
  result.token = -1;

  // 0. Penalties and banned tokens, 1. Masking.
  for (const LogitAdjustment& a : adjustments) {
    if (a.token < 0 || a.token >= V) continue;
    float& v = x[size_t(a.token)];
    v = (v > 0 ? v / a.repetition : v * a.repetition) - a.subtract;
  }
  float m = -kInf;
  for (float& v : x) {
    if (std::isnan(v)) v = -kInf;
    m = std::max(m, v);
  }
  if (m == -kInf) return result;
  if (m == kInf) {  // the limit of softmax: the +inf tokens share everything
    for (float& v : x) v = v == kInf ? 0.0f : -kInf;
    m = 0;
  }

  // 2. Raw logprobs. w holds the weights at temperature 1 for now.
  std::vector<double> w(static_cast<size_t>(V));
  double sum = 0;
  for (int32_t i = 0; i < V; ++i) sum += (w[i] = std::exp(double(x[i]) - m));
  const double lse = m + std::log(sum);
  auto logprob = [&](int32_t i) { return float(double(x[i]) - lse); };

  if (row.logprobs > 0) {
    // Insertion into a short sorted list; equal logits keep ascending ids.
    const size_t n = size_t(std::min(row.logprobs, kMaxTopLogprobs));
    std::vector<int32_t> top;
    for (int32_t i = 0; i < V; ++i) {
      if (x[i] == -kInf || (top.size() == n && x[i] <= x[top.back()])) continue;
      top.insert(std::find_if(top.begin(), top.end(), [&](int32_t j) { return x[j] < x[i]; }), i);
      if (top.size() > n) top.pop_back();
    }
    for (int32_t token : top) {
      result.top_tokens[result.num_top] = token;
      result.top_logprobs[result.num_top++] = logprob(token);
    }
  }

  if (row.temperature == 0) {
    // 3. Greedy: max_element returns the first (lowest id) of equal maxima.
    result.token = int32_t(std::max_element(x.begin(), x.end()) - x.begin());
  } else {
    // 4. Weights and filters. Each filter keeps the tokens up to a cut in the
    // order, or (min-p) of weight >= min_p; the most probable token has weight
    // exactly 1 and survives them all.
    const double T = row.temperature;
    if (T != 1)
      for (int32_t i = 0; i < V; ++i) w[i] = std::exp((double(x[i]) - m) / T);
    std::vector<uint32_t> ranks(static_cast<size_t>(V));
    for (int32_t i = 0; i < V; ++i) ranks[i] = rank(x[i]);
    auto key = [&](int32_t i) { return uint64_t{ranks[i]} << 32 | uint32_t(i); };
    uint64_t cut = std::numeric_limits<uint64_t>::max();
    auto kept = [&](int32_t i) { return w[i] > 0 && key(i) <= cut; };
    auto keptWeight = [&](int32_t i) { return kept(i) ? w[i] : 0.0; };
    auto total = [&] {
      double s = 0;
      for (int32_t i = 0; i < V; ++i) s += keptWeight(i);
      return s;
    };
    if (row.top_k > 0) {
      auto count = [&](int32_t i) { return kept(i) ? 1.0 : 0.0; };
      cut = key(selectInOrder(ranks, count, double(row.top_k), /*inclusive=*/true));
    }
    if (row.top_p < 1)
      cut = key(selectInOrder(ranks, keptWeight, row.top_p * total(), /*inclusive=*/true));
    if (row.min_p > 0)
      for (double& weight : w)
        if (weight < row.min_p) weight = 0;

    // 5. Inverse CDF.
    result.token = selectInOrder(ranks, keptWeight, row.u * total(), /*inclusive=*/false);
  }
  result.logprob = logprob(result.token);
  return result;
}

SampleResult toSampleResult(const RowSample& row) {
  SampleResult result{row.token, row.logprob, {}};
  for (int i = 0; i < row.num_top; ++i)
    result.top.push_back({row.top_tokens[i], row.top_logprobs[i]});
  return result;
}

Sampler::Sampler(const SamplingParams& params, uint64_t default_seed, std::span<const int32_t> prompt)
    : params_(params), rng_(params.seed.value_or(default_seed)) {
  validate(params_, std::numeric_limits<int>::max());
  if (params_.repetition_penalty != 1) {
    promptTokens_.assign(prompt.begin(), prompt.end());
    std::sort(promptTokens_.begin(), promptTokens_.end());
    promptTokens_.erase(std::unique(promptTokens_.begin(), promptTokens_.end()), promptTokens_.end());
  }
}

RowSampling Sampler::prepare(std::vector<LogitAdjustment>& adjustments,
                             std::span<const int32_t> extra_banned) {
  RowSampling row{};
  row.temperature = params_.temperature;
  row.top_k = params_.top_k;
  row.top_p = params_.top_p;
  row.min_p = params_.min_p;
  row.logprobs = params_.logprobs;
  if (row.temperature != 0) row.u = double(rng_() >> 11) * 0x1.0p-53;

  // One adjustment per token, in token order: the repetition penalty over
  // the prompt and the output, frequency and presence over the output (one
  // merge of the two sorted lists, linear in the history), then the bans.
  const size_t first = adjustments.size();
  const float r = params_.repetition_penalty;
  const std::span<const int32_t> prompt =
      r != 1 ? std::span<const int32_t>(promptTokens_) : std::span<const int32_t>{};
  for (size_t p = 0, o = 0; p < prompt.size() || o < outputCounts_.size();) {
    if (o == outputCounts_.size() || (p < prompt.size() && prompt[p] < outputCounts_[o].first)) {
      adjustments.push_back({prompt[p++], r, 0.0f});
      continue;
    }
    const auto [token, count] = outputCounts_[o++];
    if (p < prompt.size() && prompt[p] == token) ++p;
    adjustments.push_back({token, r, params_.frequency_penalty * float(count) + params_.presence_penalty});
  }
  auto byToken = [](const LogitAdjustment& a, const LogitAdjustment& b) { return a.token < b.token; };
  const auto penalised = long(adjustments.size());
  for (auto banned : {std::span<const int32_t>(params_.banned_tokens), extra_banned})
    for (int32_t token : banned) {
      const LogitAdjustment ban{token, 1.0f, kInf};
      auto end = adjustments.begin() + penalised;
      auto at = std::lower_bound(adjustments.begin() + long(first), end, ban, byToken);
      if (at != end && at->token == token)
        at->subtract = kInf;
      else
        adjustments.push_back(ban);
    }
  std::sort(adjustments.begin() + penalised, adjustments.end(), byToken);
  adjustments.erase(std::unique(adjustments.begin() + penalised, adjustments.end(),
                                [](const LogitAdjustment& a, const LogitAdjustment& b) { return a.token == b.token; }),
                    adjustments.end());
  std::inplace_merge(adjustments.begin() + long(first), adjustments.begin() + penalised, adjustments.end(), byToken);
  row.first_adjustment = int(first);
  row.num_adjustments = int(adjustments.size() - first);
  return row;
}

void Sampler::accept(int32_t token) {
  if (!params_.hasPenalties()) return;
  auto at = std::lower_bound(outputCounts_.begin(), outputCounts_.end(), std::pair{token, 0});
  if (at != outputCounts_.end() && at->first == token)
    ++at->second;
  else
    outputCounts_.insert(at, {token, 1});
}

SampleResult Sampler::sample(std::span<const float> logits) {
  validate(params_, static_cast<int>(logits.size()));
  std::vector<LogitAdjustment> adjustments;
  const RowSampling row = prepare(adjustments);
  std::vector<float> x(logits.begin(), logits.end());
  const RowSample result = sampleRow(x, row, adjustments);
  if (result.token < 0) throw std::runtime_error("no token can be sampled: all logits are -inf or NaN");
  accept(result.token);
  return toSampleResult(result);
}

}  // namespace llmc::sample
