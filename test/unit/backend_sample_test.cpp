// Backend::sample against the host Sampler: a batch of rows with every kind
// of sampling parameter, penalties and bans gives each row the token, logprob
// and top logprobs that Sampler::sample gives it alone (on the backend
// BackendUnderTest.h describes).

#include "test/unit/BackendUnderTest.h"

#include "runtime/backend/Backend.h"
#include "runtime/backend/cuda/SampleShape.h"
#include "runtime/plan/PlanFile.h"
#include "runtime/sample/Sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace llmc;
using runtime::DeviceBuffer;
using sample::LogitAdjustment;
using sample::RowSample;
using sample::RowSampling;
using sample::Sampler;
using sample::SamplingParams;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

class BackendSample : public BackendUnderTest {
protected:
  // Samples `rows` (each V logits) on the backend `steps` times, each row
  // prepared by a Sampler with params[row], and checks every result against
  // a host Sampler made with the same parameters, seed and history.
  void expectSameAsHost(const std::vector<std::vector<float>> &rows,
                        const std::vector<SamplingParams> &params, int steps) {
    const size_t S = rows.size(), V = rows[0].size();
    std::vector<Sampler> device, host;
    for (size_t s = 0; s < S; ++s) {
      device.emplace_back(params[s], 1000 + s, std::vector<int32_t>{int32_t(s), 7, 7});
      host.emplace_back(params[s], 1000 + s, std::vector<int32_t>{int32_t(s), 7, 7});
    }
    DeviceBuffer logits(*backend_, S * V * sizeof(float));
    DeviceBuffer rowParams(*backend_, S * sizeof(RowSampling));
    DeviceBuffer results(*backend_, S * sizeof(RowSample));
    for (int step = 0; step < steps; ++step) {
      std::vector<float> flat;
      for (const auto &row : rows)
        flat.insert(flat.end(), row.begin(), row.end());
      std::vector<RowSampling> prepared;
      std::vector<LogitAdjustment> adjustments;
      for (Sampler &sampler : device)
        prepared.push_back(sampler.prepare(adjustments));
      DeviceBuffer adjusted(*backend_, adjustments.size() * sizeof(LogitAdjustment));
      backend_->upload(logits.get(), flat.data(), flat.size() * sizeof(float));
      backend_->upload(rowParams.get(), prepared.data(), S * sizeof(RowSampling));
      backend_->upload(adjusted.get(), adjustments.data(), adjustments.size() * sizeof(LogitAdjustment));
      backend_->sample(logits.get<float>(), int64_t(S), int64_t(V), rowParams.get<RowSampling>(),
                       adjusted.get<LogitAdjustment>(), results.get<RowSample>());
      std::vector<RowSample> got(S);
      backend_->download(got.data(), results.get(), S * sizeof(RowSample));
      for (size_t s = 0; s < S; ++s) {
        SCOPED_TRACE("row " + std::to_string(s) + " step " + std::to_string(step));
        bool sampleable = true;
        sample::SampleResult want;
        try {
          want = host[s].sample(rows[s]);
        } catch (const std::runtime_error &) {
          sampleable = false;
        }
        if (!sampleable) {
          EXPECT_EQ(got[s].token, -1);
          continue;
        }
        device[s].accept(got[s].token);
        ASSERT_EQ(got[s].token, want.token);
        EXPECT_NEAR(got[s].logprob, want.logprob, 1e-5);
        ASSERT_EQ(size_t(got[s].num_top), want.top.size());
        for (size_t k = 0; k < want.top.size(); ++k) {
          EXPECT_EQ(got[s].top_tokens[k], want.top[k].token) << k;
          EXPECT_NEAR(got[s].top_logprobs[k], want.top[k].logprob, 1e-5) << k;
        }
      }
    }
  }
};

std::vector<float> randomRow(size_t V, std::mt19937_64 &gen, float stddev) {
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> row(V);
  for (float &v : row)
    v = normal(gen);
  return row;
}

// Every filter alone and together, at several temperatures, with logprobs,
// on a Llama-3-sized vocabulary; a quarter of the rows rounded like bf16
// logits (many exact ties), a quarter narrow.
TEST_F(BackendSample, EveryFilterMatchesTheHostSampler) {
  constexpr size_t V = 128256;
  std::mt19937_64 gen(5);
  std::vector<std::vector<float>> rows;
  std::vector<SamplingParams> params;
  const float temperatures[] = {0.0f, 0.6f, 1.0f, 1.3f};
  for (int r = 0; r < 48; ++r) {
    // Every fourth row narrow (sd 0.01, like a model with random weights):
    // most tokens then share a few radix buckets.
    std::vector<float> row = randomRow(V, gen, r % 4 == 1 ? 0.01f : 1.0f + float(r % 5));
    if (r % 4 == 0)
      for (float &v : row)
        v = std::round(v * 8) / 8;
    rows.push_back(std::move(row));
    SamplingParams p;
    p.temperature = temperatures[r % 4];
    p.top_k = (r / 4) % 3 == 0 ? 0 : int(1 + gen() % 100);
    p.top_p = (r / 4) % 2 == 0 ? 1.0f : 0.5f + float(gen() % 50) / 100;
    p.min_p = (r / 8) % 2 == 0 ? 0.0f : float(gen() % 20) / 100;
    p.logprobs = int(gen() % 21);
    params.push_back(p);
  }
  expectSameAsHost(rows, params, 3);
}

// A single row (the CUDA backend splits it over a cluster of blocks) and a
// full batch of 256 rows (one block a row there), with mixed filters.
TEST_F(BackendSample, OneRowAndAFullBatchMatchTheHostSampler) {
  std::mt19937_64 gen(9);
  SamplingParams one;
  one.temperature = 0.8f;
  one.top_p = 0.9f;
  one.logprobs = 5;
  expectSameAsHost({randomRow(128256, gen, 3.0f)}, {one}, 4);

  std::vector<std::vector<float>> rows;
  std::vector<SamplingParams> params;
  for (int r = 0; r < 256; ++r) {
    rows.push_back(randomRow(4096, gen, r % 3 == 0 ? 0.01f : 2.0f));
    SamplingParams p;
    p.temperature = r % 4 == 0 ? 0.0f : 0.5f + float(r % 7) / 5;
    p.top_k = r % 5 == 0 ? 40 : 0;
    p.top_p = r % 2 == 0 ? 0.8f : 1.0f;
    p.logprobs = r % 6;
    params.push_back(p);
  }
  expectSameAsHost(rows, params, 2);
}

// Penalties over the prompt and the output so far, and banned tokens, are
// applied by the backend from the adjustments prepare() lists.
TEST_F(BackendSample, PenaltiesAndBansMatchTheHostSampler) {
  constexpr size_t V = 5000;
  std::mt19937_64 gen(6);
  std::vector<std::vector<float>> rows;
  std::vector<SamplingParams> params;
  for (int r = 0; r < 12; ++r) {
    rows.push_back(randomRow(V, gen, 0.5f));
    SamplingParams p;
    p.temperature = r % 3 == 0 ? 0.0f : 0.8f;
    p.repetition_penalty = r % 2 ? 1.8f : 1.0f;
    p.frequency_penalty = r % 4 < 2 ? 0.7f : 0.0f;
    p.presence_penalty = r % 3 == 1 ? -0.5f : 0.4f;
    p.banned_tokens = {int32_t(r), 7};
    p.logprobs = 3;
    params.push_back(p);
  }
  expectSameAsHost(rows, params, 6);
}

// NaN never wins, +inf takes all the probability, exact ties go to the lower
// id, and a row with nothing finite gives token -1 without harming the others.
TEST_F(BackendSample, SpecialValuesAndTies) {
  constexpr size_t V = 3000;
  std::vector<std::vector<float>> rows(6, std::vector<float>(V, -1.0f));
  rows[0][10] = kNaN;
  rows[0][2999] = 5.0f;
  rows[1][400] = kInf;
  rows[1][90] = kInf;
  rows[2].assign(V, 0.25f);  // every token tied
  rows[3].assign(V, -kInf);  // nothing to sample
  rows[4].assign(V, kNaN);
  rows[5][1234] = 2.0f;
  rows[5][1235] = 2.0f;
  std::vector<SamplingParams> params;
  for (float t : {0.0f, 1.0f, 0.7f, 1.0f, 0.0f, 2.0f}) {
    SamplingParams p;
    p.temperature = t;
    p.logprobs = 5;
    params.push_back(p);
  }
  params[2].top_k = 700;  // a cut inside a run of 3000 equal logits
  params[5].top_p = 0.3f;
  expectSameAsHost(rows, params, 4);
}

// The CUDA sampler's launch: a row over a cluster of blocks only while the
// grid keeps one block a multiprocessor, and slices that cover the row.
TEST(SampleShape, RowBlocksKeepOneBlockAMultiprocessor) {
  using llmc::sample_rows::rowBlocks;
  EXPECT_EQ(rowBlocks(1, 8, 132), 8);
  EXPECT_EQ(rowBlocks(16, 8, 132), 8);
  EXPECT_EQ(rowBlocks(17, 8, 132), 4);
  EXPECT_EQ(rowBlocks(33, 8, 132), 4);
  EXPECT_EQ(rowBlocks(34, 8, 132), 2);
  EXPECT_EQ(rowBlocks(67, 8, 132), 1);
  EXPECT_EQ(rowBlocks(256, 8, 132), 1);
  EXPECT_EQ(rowBlocks(1, 2, 132), 2);   // the largest cluster this GPU places
  EXPECT_EQ(rowBlocks(1, 1, 132), 1);   // no clusters (before sm_90)
  EXPECT_EQ(rowBlocks(1, 8, 4), 4);     // a small GPU (or MIG slice)
  for (long long rows : {1, 5, 16, 40, 100, 200})
    EXPECT_LE(rows * rowBlocks(rows, 8, 132), std::max(rows, 132LL)) << rows;
}

TEST(SampleShape, SlicesCoverTheRow) {
  using llmc::sample_rows::sliceTokens;
  for (int cols : {1, 3, 4, 31, 4096, 5000, 128256, 151936})
    for (int blocks : {1, 2, 4, 8}) {
      const int slice = sliceTokens(cols, blocks);
      EXPECT_EQ(slice % 4, 0);
      EXPECT_GE(slice * blocks, cols) << cols << " " << blocks;      // every token in a slice
      EXPECT_LT((slice - 4) * blocks, cols) << cols << " " << blocks;  // no slice 4 tokens too long
    }
  EXPECT_EQ(llmc::sample_rows::sharedBytes(1), 32768);
  EXPECT_EQ(llmc::sample_rows::sharedBytes(8), 65536);
}

} // namespace
