// Unit tests for runtime/sample/Sampler.{h,cpp}.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/sample/Sampler.h"

using namespace llmc::sample;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> randomLogits(size_t V, uint64_t seed, float stddev = 3.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> x(V);
  for (float& v : x) v = dist(rng);
  return x;
}

int32_t argmax(const std::vector<float>& x) {
  return int32_t(std::max_element(x.begin(), x.end()) - x.begin());
}

SamplingParams withTemperature(float t) {
  SamplingParams p;
  p.temperature = t;
  return p;
}

int32_t sampleOnce(const SamplingParams& p, const std::vector<float>& x, uint64_t seed = 1) {
  return Sampler(p, seed).sample(x).token;
}

// log_softmax in double, written independently of the sampler.
std::vector<double> logSoftmax(const std::vector<float>& x) {
  double m = -std::numeric_limits<double>::infinity();
  for (float v : x)
    if (!std::isnan(v)) m = std::max(m, double(v));
  double s = 0;
  for (float v : x)
    if (!std::isnan(v)) s += std::exp(double(v) - m);
  std::vector<double> out;
  for (float v : x) out.push_back(std::isnan(v) ? -INFINITY : double(v) - m - std::log(s));
  return out;
}

// The definition in Sampler.h, with a full sort: the token for uniform u.
int32_t referenceSample(std::vector<float> x, const SamplingParams& p, double u) {
  for (int32_t b : p.banned_tokens) x[b] = -kInf;
  std::vector<int32_t> order;
  for (int32_t i = 0; i < int32_t(x.size()); ++i)
    if (!std::isnan(x[i]) && x[i] != -kInf) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return x[a] > x[b]; });
  if (p.temperature == 0) return order[0];
  std::vector<double> w;
  for (int32_t i : order) w.push_back(std::exp((double(x[i]) - x[order[0]]) / p.temperature));
  size_t n = order.size();
  if (p.top_k > 0) n = std::min(n, size_t(p.top_k));
  auto total = [&] { return std::accumulate(w.begin(), w.begin() + n, 0.0); };
  if (p.top_p < 1) {
    const double target = p.top_p * total();
    double cum = 0;
    for (size_t j = 0; j < n; ++j)
      if ((cum += w[j]) >= target) {
        n = j + 1;
        break;
      }
  }
  while (p.min_p > 0 && w[n - 1] < p.min_p) --n;
  const double t = u * total();
  double cum = 0;
  for (size_t j = 0; j < n; ++j)
    if ((cum += w[j]) > t) return order[j];
  return order[n - 1];
}

// ---------------------------------------------------------------------------
// Validation

void expectInvalid(const SamplingParams& p, const std::string& name, int vocab = 10) {
  try {
    validate(p, vocab);
    FAIL() << "no error for " << name;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
  EXPECT_THROW(Sampler(p, 0).sample(std::vector<float>(vocab, 0.0f)), std::invalid_argument);
}

TEST(SamplerValidate, RejectsEachInvalidValueNamingIt) {
  SamplingParams p;
  p.temperature = -0.5f;
  expectInvalid(p, "temperature");
  p.temperature = kNaN;
  expectInvalid(p, "temperature");

  for (float top_p : {0.0f, -0.1f, 1.01f, kNaN}) {
    p = {};
    p.top_p = top_p;
    expectInvalid(p, "top_p");
  }
  for (float min_p : {-0.01f, 1.5f, kNaN}) {
    p = {};
    p.min_p = min_p;
    expectInvalid(p, "min_p");
  }
  p = {};
  p.top_k = -2;
  expectInvalid(p, "top_k");
  for (int n : {-1, 21}) {
    p = {};
    p.logprobs = n;
    expectInvalid(p, "logprobs");
  }
  for (int32_t token : {-1, 10, 1000}) {
    p = {};
    p.banned_tokens = {3, token};
    expectInvalid(p, "banned_tokens");
  }
  for (float penalty : {-2.5f, 2.01f, kNaN}) {
    p = {};
    p.presence_penalty = penalty;
    expectInvalid(p, "presence_penalty");
    p = {};
    p.frequency_penalty = penalty;
    expectInvalid(p, "frequency_penalty");
  }
  for (float penalty : {0.0f, -1.0f, 2.5f, kNaN}) {
    p = {};
    p.repetition_penalty = penalty;
    expectInvalid(p, "repetition_penalty");
  }
}

TEST(SamplerValidate, AcceptsBoundaryValues) {
  SamplingParams p;
  p.temperature = 0;
  p.top_k = -1;
  p.top_p = 1;
  p.min_p = 1;
  p.logprobs = 20;
  p.banned_tokens = {0, 9};
  EXPECT_NO_THROW(validate(p, 10));
  p.top_k = 0;
  p.min_p = 0;
  p.top_p = 1e-9f;
  p.logprobs = 0;
  EXPECT_NO_THROW(validate(p, 10));
}

TEST(SamplerValidate, BannedTokenBeyondTheRowIsRejectedAtSampleTime) {
  SamplingParams p;
  p.banned_tokens = {7};
  Sampler s(p, 0);  // the vocabulary is not known yet
  EXPECT_THROW(s.sample(std::vector<float>(5, 0.0f)), std::invalid_argument);
  EXPECT_NO_THROW(s.sample(std::vector<float>(8, 0.0f)));
}

// ---------------------------------------------------------------------------
// Greedy and its limits

TEST(Sampler, GreedyPicksArgmaxTiesToLowestId) {
  EXPECT_EQ(sampleOnce(withTemperature(0), {1, 5, 2, 5, -1}), 1);
  EXPECT_EQ(sampleOnce(withTemperature(0), {7, 7, 7}), 0);
  EXPECT_EQ(sampleOnce(withTemperature(0), {-0.0f, 0.0f}), 0);
  EXPECT_EQ(sampleOnce(withTemperature(0), {-3, -2, -kInf, -2.5f}), 1);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto x = randomLogits(1000, seed);
    EXPECT_EQ(sampleOnce(withTemperature(0), x, seed), argmax(x));
  }
}

TEST(Sampler, TinyTemperatureEqualsGreedy) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto x = randomLogits(1000, seed);
    for (float t : {1e-3f, 1e-6f, 1e-30f, 1e-45f})
      EXPECT_EQ(sampleOnce(withTemperature(t), x, seed), argmax(x)) << t;
  }
}

TEST(Sampler, TopK1EqualsGreedyAtAnyTemperature) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto x = randomLogits(1000, seed);
    x[seed * 37 % 1000] = x[argmax(x)];  // a tie at the top: still the lowest id
    for (float t : {0.5f, 1.0f, 2.0f, 100.0f, kInf}) {
      SamplingParams p = withTemperature(t);
      p.top_k = 1;
      EXPECT_EQ(sampleOnce(p, x, seed), argmax(x)) << t;
    }
  }
}

TEST(Sampler, TinyTopPEqualsGreedy) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto x = randomLogits(1000, seed);
    SamplingParams p = withTemperature(2.0f);
    p.top_p = 1e-6f;
    EXPECT_EQ(sampleOnce(p, x, seed), argmax(x));
  }
}

TEST(Sampler, MinP1EqualsGreedyWithoutTies) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto x = randomLogits(1000, seed);
    SamplingParams p = withTemperature(1.5f);
    p.min_p = 1.0f;
    EXPECT_EQ(sampleOnce(p, x, seed), argmax(x));
  }
}

// ---------------------------------------------------------------------------
// Masking

TEST(Sampler, BannedTokensAreNeverSampled) {
  auto x = randomLogits(100, 7);
  const int32_t best = argmax(x);
  SamplingParams p = withTemperature(0);
  p.banned_tokens = {best};
  auto y = x;
  y[best] = -kInf;
  EXPECT_EQ(sampleOnce(p, x), argmax(y));  // greedy takes the runner-up

  std::vector<float> flat(8, 0.0f);
  p = withTemperature(1.0f);
  p.banned_tokens = {0, 3, 5};
  p.logprobs = 8;
  Sampler s(p, 42);
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) {
    SampleResult r = s.sample(flat);
    seen.insert(r.token);
    EXPECT_NEAR(r.logprob, std::log(1.0 / 5), 1e-6);
    ASSERT_EQ(r.top.size(), 5u);  // banned tokens are not listed
  }
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2, 4, 6, 7}));
}

TEST(Sampler, NaNIsMinusInfinity) {
  std::vector<float> x = {kNaN, 1.0f, kNaN, 0.5f};
  EXPECT_EQ(sampleOnce(withTemperature(0), x), 1);
  Sampler s(withTemperature(1.0f), 3);
  for (int i = 0; i < 500; ++i) {
    const int32_t t = s.sample(x).token;
    EXPECT_TRUE(t == 1 || t == 3);
  }
}

TEST(Sampler, NothingToSampleThrows) {
  const std::string msg = "no token can be sampled: all logits are -inf or NaN";
  auto expectNothing = [&](const std::vector<float>& x, SamplingParams p) {
    try {
      Sampler(p, 0).sample(x);
      FAIL() << "no error";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(e.what(), msg);
    }
  };
  for (float t : {0.0f, 1.0f}) {
    expectNothing({-kInf, -kInf, -kInf}, withTemperature(t));
    expectNothing({kNaN, -kInf}, withTemperature(t));
    expectNothing({}, withTemperature(t));
    SamplingParams p = withTemperature(t);
    p.banned_tokens = {0, 1};
    expectNothing({1.0f, kNaN}, p);
  }
}

TEST(Sampler, PlusInfinityTakesAllTheProbability) {
  std::vector<float> x = {3.0f, kInf, 1e30f, kInf};
  Sampler s(withTemperature(1.0f), 5);
  std::set<int32_t> seen;
  for (int i = 0; i < 200; ++i) {
    SampleResult r = s.sample(x);
    seen.insert(r.token);
    EXPECT_FLOAT_EQ(r.logprob, std::log(0.5f));
  }
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));
}

// ---------------------------------------------------------------------------
// Randomness

TEST(Sampler, SeedsAreReproducibleAndDistinct) {
  std::vector<float> x = {0.0f, 0.1f, 0.2f, 0.3f};
  auto draws = [&](std::optional<uint64_t> seed, uint64_t defaultSeed) {
    SamplingParams p;
    p.seed = seed;
    Sampler s(p, defaultSeed);
    std::vector<int32_t> out;
    for (int i = 0; i < 100; ++i) out.push_back(s.sample(x).token);
    return out;
  };
  EXPECT_EQ(draws(1234, 1), draws(1234, 2));      // params.seed wins
  EXPECT_NE(draws(1234, 1), draws(1235, 1));
  EXPECT_EQ(draws(std::nullopt, 9), draws(9, 0));  // default_seed otherwise
  EXPECT_NE(draws(std::nullopt, 9), draws(std::nullopt, 10));
}

std::vector<double> frequencies(const std::vector<float>& x, float temperature, int draws) {
  Sampler s(withTemperature(temperature), 2024);
  std::vector<double> f(x.size());
  for (int i = 0; i < draws; ++i) f[s.sample(x).token] += 1.0 / draws;
  return f;
}

TEST(Sampler, EmpiricalFrequenciesMatchTheDistribution) {
  const std::vector<double> probs = {0.1, 0.2, 0.3, 0.4};
  std::vector<float> x;
  for (double q : probs) x.push_back(float(std::log(q)) + 5.0f);
  auto f = frequencies(x, 1.0f, 20000);
  for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(f[i], probs[i], 0.02) << i;

  // Temperature 0.5 squares the probabilities: 1, 4, 9, 16 over 30.
  f = frequencies(x, 0.5f, 20000);
  for (size_t i = 0; i < probs.size(); ++i)
    EXPECT_NEAR(f[i], probs[i] * probs[i] / 0.3, 0.02) << i;
}

// ---------------------------------------------------------------------------
// Filters

TEST(Sampler, FiltersNeverLetAFilteredTokenThrough) {
  // In order: token 1 (0.4), 3 (0.25), 0 (0.2), 4 (0.1), 2 (0.05). Thresholds
  // stay clear of exact boundaries, which float rounding could tip either way.
  const std::vector<double> probs = {0.2, 0.4, 0.05, 0.25, 0.1};
  std::vector<float> x;
  for (double q : probs) x.push_back(float(std::log(q)));
  struct Case {
    int top_k;
    float top_p, min_p;
    std::set<int32_t> allowed;
  };
  const Case cases[] = {
      {2, 1.0f, 0.0f, {1, 3}},
      {3, 1.0f, 0.0f, {1, 3, 0}},
      {0, 0.5f, 0.0f, {1, 3}},        // 0.4 < 0.5 <= 0.65
      {0, 0.64f, 0.0f, {1, 3}},
      {0, 0.66f, 0.0f, {1, 3, 0}},
      {-1, 0.39f, 0.0f, {1}},
      {0, 1.0f, 0.49f, {1, 3, 0}},    // 0.2 >= 0.49 * 0.4
      {0, 1.0f, 0.51f, {1, 3}},
      {4, 0.9f, 0.2f, {1, 3, 0, 4}},  // min_p 0.08: 0.1 stays
      {4, 0.8f, 0.0f, {1, 3, 0}},     // top-p over the top-4 mass 0.95: 0.76
      {3, 0.9f, 0.6f, {1, 3}},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    Sampler s(p, 77);
    std::set<int32_t> seen;
    for (int i = 0; i < 1000; ++i) seen.insert(s.sample(x).token);
    EXPECT_EQ(seen, c.allowed) << "top_k=" << c.top_k << " top_p=" << c.top_p
                               << " min_p=" << c.min_p;
  }
}

TEST(Sampler, TopKTiesAtTheBoundaryKeepLowerIds) {
  std::vector<float> x = {1.0f, 2.0f, 1.0f, 1.0f, 0.0f};
  SamplingParams p;
  p.top_k = 3;  // 1, then two of the three tokens at 1.0: 0 and 2
  Sampler s(p, 5);
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(s.sample(x).token);
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1, 2}));
}

// Random rows and parameters against the sort-based reference, replaying the
// sampler's uniform draws.
TEST(Sampler, MatchesTheSortBasedReference) {
  std::mt19937_64 gen(99);
  for (int row = 0; row < 300; ++row) {
    const size_t V = 1 + gen() % 3000;
    auto x = randomLogits(V, gen(), 0.5f + float(gen() % 40) / 4);
    if (row % 3 == 0)  // bf16-like logits: many exact ties
      for (float& v : x) v = std::round(v * 4) / 4;
    SamplingParams p;
    const float temps[] = {0.0f, 0.3f, 0.7f, 1.0f, 1.5f, 4.0f};
    p.temperature = temps[gen() % 6];
    p.top_k = int(gen() % 4 == 0 ? 0 : gen() % 60) - 1;
    p.top_p = gen() % 2 ? 1.0f : 0.05f + float(gen() % 95) / 100;
    p.min_p = gen() % 2 ? 0.0f : float(gen() % 100) / 100;
    for (int b = 0; b < 3; ++b)
      if (gen() % 2) p.banned_tokens.push_back(int32_t(gen() % V));

    const uint64_t seed = gen();
    Sampler s(p, seed);
    std::mt19937_64 replay(seed);
    for (int draw = 0; draw < 5; ++draw) {
      double u = 0;
      if (p.temperature != 0) u = double(replay() >> 11) * 0x1.0p-53;
      int32_t token = -1;
      try {
        token = s.sample(x).token;
      } catch (const std::runtime_error&) {  // every token banned
        ASSERT_EQ(V, std::set<int32_t>(p.banned_tokens.begin(), p.banned_tokens.end()).size());
        continue;
      }
      ASSERT_EQ(token, referenceSample(x, p, u)) << "row " << row << " draw " << draw;
    }
  }
}

// ---------------------------------------------------------------------------
// Logprobs

TEST(Sampler, ChosenLogprobIsRawLogSoftmax) {
  auto x = randomLogits(5000, 11);
  const int32_t best = argmax(x);
  x[best == 17 ? 18 : 17] = kNaN;
  SamplingParams p;
  p.temperature = 0.7f;  // logprobs ignore the temperature and the filters
  p.top_k = 50;
  p.top_p = 0.9f;
  p.banned_tokens = {best};
  auto masked = x;
  masked[best] = -kInf;
  const auto ref = logSoftmax(masked);
  Sampler s(p, 3);
  for (int i = 0; i < 200; ++i) {
    SampleResult r = s.sample(x);
    EXPECT_NEAR(r.logprob, ref[r.token], 1e-5);
    EXPECT_TRUE(r.top.empty());
  }
}

TEST(Sampler, TopLogprobsAreSortedAndCorrect) {
  auto x = randomLogits(20000, 12);
  for (int i = 0; i < 30; ++i) x[100 + i] = std::round(x[100 + i]);  // some ties
  x[5] = x[6] = 40.0f;  // a tie at the top
  x[7] = kNaN;
  const auto ref = logSoftmax(x);
  std::vector<int32_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ref[a] > ref[b]; });

  for (int n : {1, 5, 20}) {
    for (float t : {0.0f, 1.0f}) {
      SamplingParams p = withTemperature(t);
      p.logprobs = n;
      SampleResult r = Sampler(p, 8).sample(x);
      ASSERT_EQ(r.top.size(), size_t(n));
      for (int j = 0; j < n; ++j) {
        EXPECT_EQ(r.top[j].token, order[j]) << j;
        EXPECT_NEAR(r.top[j].logprob, ref[order[j]], 1e-5);
        if (j > 0) {
          EXPECT_GE(r.top[j - 1].logprob, r.top[j].logprob);
        }
      }
      EXPECT_EQ(r.top[0].token, 5);
      EXPECT_NEAR(r.logprob, ref[r.token], 1e-5);
    }
  }
  // Fewer finite tokens than asked for.
  SamplingParams p;
  p.logprobs = 4;
  SampleResult r = Sampler(p, 1).sample(std::vector<float>{-kInf, 2.0f, kNaN, 1.0f});
  ASSERT_EQ(r.top.size(), 2u);
  EXPECT_EQ(r.top[0].token, 1);
  EXPECT_EQ(r.top[1].token, 3);
}

// Penalties follow vLLM's definitions: the logprobs show the penalised
// logits, so each penalty can be read back from them.
TEST(Sampler, PenaltiesFollowTheOutputAndPromptHistory) {
  const std::vector<float> x{2.0f, 1.0f, -1.0f, 0.5f, 0.0f};
  auto penalised = [&](SamplingParams p, std::vector<int32_t> prompt, std::vector<float> expected) {
    p.temperature = 0;
    p.logprobs = 5;
    Sampler s(p, 0, prompt);
    SampleResult first = s.sample(x);
    EXPECT_EQ(first.token, 0);
    SampleResult second = s.sample(x);  // token 0 is now in the output once
    const auto ref = logSoftmax(expected);
    for (const auto& [token, logprob] : second.top) EXPECT_NEAR(logprob, ref[token], 1e-5) << token;
    EXPECT_EQ(second.token, argmax(expected));
  };
  SamplingParams p;
  p.presence_penalty = 1.5f;
  penalised(p, {}, {0.5f, 1.0f, -1.0f, 0.5f, 0.0f});
  p = {};
  p.frequency_penalty = -0.5f;  // negative: encourages repeats
  penalised(p, {}, {2.5f, 1.0f, -1.0f, 0.5f, 0.0f});
  p = {};
  p.repetition_penalty = 2.0f;  // prompt {1, 2} and output {0}: positive halved, negative doubled
  penalised(p, {1, 2, 2}, {1.0f, 0.5f, -2.0f, 0.5f, 0.0f});
}

}  // namespace

// prepare() lists one adjustment per token, in token order: the repetition
// penalty for prompt and output tokens, frequency and presence for output
// tokens, +inf for banned ones (the params' and the extra ones), merged.
TEST(Sampler, PrepareListsOneAdjustmentPerTokenInOrder) {
  SamplingParams p;
  p.temperature = 0.5f;
  p.repetition_penalty = 1.5f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  p.banned_tokens = {9, 3};
  Sampler s(p, 0, std::vector<int32_t>{9, 4, 4, 2});
  for (int32_t token : {5, 2, 5}) s.accept(token);
  std::vector<LogitAdjustment> adjustments{{100, 1.0f, 1.0f}};  // an earlier row's
  const RowSampling row = s.prepare(adjustments, std::vector<int32_t>{7, 3});
  EXPECT_EQ(row.first_adjustment, 1);
  ASSERT_EQ(row.num_adjustments, 6);
  const std::vector<LogitAdjustment> expected{
      {2, 1.5f, 0.75f}, {3, 1.0f, kInf}, {4, 1.5f, 0.0f}, {5, 1.5f, 1.25f}, {7, 1.0f, kInf}, {9, 1.5f, kInf}};
  for (size_t j = 0; j < expected.size(); ++j) {
    const LogitAdjustment& got = adjustments[1 + j];
    EXPECT_EQ(got.token, expected[j].token) << j;
    EXPECT_EQ(got.repetition, expected[j].repetition) << j;
    EXPECT_EQ(got.subtract, expected[j].subtract) << j;
  }
  EXPECT_GT(row.u, 0.0);  // sampling, so u was drawn
  EXPECT_LT(row.u, 1.0);
}
