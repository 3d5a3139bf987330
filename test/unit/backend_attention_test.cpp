// The plan's paged_attention kernel, launched through Backend::launch on
// buffers of the test's own, against an fp64 reference on the same values:
// decode rows at context lengths around page boundaries, one long context
// (more pages a walker than one load of page indices covers), chunked
// prefill of ragged sequences (several query tiles a sequence, partial
// tiles; short batches split over clusters, long ones not), a large decode
// batch (no cluster split) and a sliding window. Pages
// are handed out in a shuffled order, and every cache slot no sequence has
// written holds NaN, so a read past a sequence's keys shows in its output.
// The head shape and dtype are the engine's (LLMC_TEST_ENGINE): on the GPU
// machine test/gpu/check.py runs this on a bf16 engine with 128-dim heads
// (the tensor-core walk) and on an fp32 one (the SIMT walk).

#include "test/unit/BackendUnderTest.h"

#include "runtime/backend/Backend.h"
#include "runtime/backend/cpu/CpuOps.h"
#include "runtime/plan/PlanFile.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace llmc;
using plan::DType;
using runtime::DeviceBuffer;

// A sequence of the batch: KV positions cached before this forward and
// query tokens it adds (their K/V are in the cache too, as rope_kv_write
// leaves them).
struct Seq {
  int cached;
  int tokens;
};

class BackendAttention : public BackendUnderTest {
protected:
  void SetUp() override {
    BackendUnderTest::SetUp();
    const auto &kernels = *plan_->plan().kernels();
    for (uint32_t i = 0; i < kernels.size(); ++i)
      if (kernels.Get(i)->kernel_template()->string_view() == "paged_attention")
        kernel_ = int32_t(i);
    ASSERT_GE(kernel_, 0) << "the engine has no paged_attention kernel";
    const plan::KernelModule &kernel = *kernels.Get(uint32_t(kernel_));
    numHeads_ = int(kernel.params()->Get(0));
    numKvHeads_ = int(kernel.params()->Get(1));
    headDim_ = int(kernel.params()->Get(2));
    pageSize_ = int(kernel.params()->Get(3));
    element_ = kernel.dtype() == DType::f32   ? cpu::ElementType::f32
               : kernel.dtype() == DType::f16 ? cpu::ElementType::f16
                                              : cpu::ElementType::bf16;
  }

  // Elements as Q, the cache and the output hold them, in the plan's dtype
  // (rounded to nearest even when stored, widened exactly when read).
  size_t elementBytes() const { return cpu::elementBytes(element_); }
  void put(std::vector<char> &bytes, size_t index, float v) const {
    cpu::storeElement(element_, bytes.data(), int64_t(index), v);
  }
  float get(const std::vector<char> &bytes, size_t index) const {
    return cpu::loadElement(element_, bytes.data(), int64_t(index));
  }

  // Runs the batch and checks every (token, head) output row's relative L2
  // error against softmax(scale q k^T) v in fp64. queryScale > 1 sharpens
  // the softmax (a few keys dominate), so a missing or extra key shows.
  void expectNearReference(const std::vector<Seq> &seqs, int slidingWindow, float queryScale = 4.0f) {
    std::string trace = "window " + std::to_string(slidingWindow) + ", sequences (cached+tokens):";
    for (const Seq &s : seqs) {
      trace += ' ';
      trace += std::to_string(s.cached);
      trace += '+';
      trace += std::to_string(s.tokens);
    }
    SCOPED_TRACE(trace);
    std::mt19937 engine(uint32_t(seqs.size() * 7919 + size_t(slidingWindow)));
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);

    const int numSeqs = int(seqs.size());
    std::vector<int32_t> qoIndptr{0}, kvIndptr{0}, lastPageLen, positions;
    for (const Seq &s : seqs) {
      const int kvLen = s.cached + s.tokens;
      qoIndptr.push_back(qoIndptr.back() + s.tokens);
      kvIndptr.push_back(kvIndptr.back() + (kvLen + pageSize_ - 1) / pageSize_);
      lastPageLen.push_back(kvLen == 0 ? 0 : (kvLen - 1) % pageSize_ + 1);
      for (int i = 0; i < s.tokens; ++i)
        positions.push_back(s.cached + i);
    }
    const int numTokens = qoIndptr.back();
    // Pages in a shuffled order, with a few no sequence owns.
    const int numPages = kvIndptr.back() + 3;
    std::vector<int32_t> pageOrder(static_cast<size_t>(numPages));
    std::iota(pageOrder.begin(), pageOrder.end(), 0);
    std::shuffle(pageOrder.begin(), pageOrder.end(), engine);
    const std::vector<int32_t> pageIndices(pageOrder.begin(), pageOrder.begin() + kvIndptr.back());

    const size_t rowElems = size_t(numHeads_) * size_t(headDim_);
    const size_t slotElems = size_t(numKvHeads_) * size_t(headDim_);
    const size_t cacheElems = size_t(numPages) * size_t(pageSize_) * slotElems;
    std::vector<char> q(size_t(numTokens) * rowElems * elementBytes());
    std::vector<char> k(cacheElems * elementBytes()), v(cacheElems * elementBytes());
    for (size_t i = 0; i < cacheElems; ++i) {
      put(k, i, std::numeric_limits<float>::quiet_NaN());
      put(v, i, std::numeric_limits<float>::quiet_NaN());
    }
    for (size_t i = 0; i < size_t(numTokens) * rowElems; ++i)
      put(q, i, queryScale * uniform(engine));
    auto slot = [&](int s, int position) {  // element offset of (position, kv head 0)
      const int page = pageIndices[size_t(kvIndptr[size_t(s)] + position / pageSize_)];
      return (size_t(page) * size_t(pageSize_) + size_t(position % pageSize_)) * slotElems;
    };
    for (int s = 0; s < numSeqs; ++s)
      for (int p = 0; p < seqs[size_t(s)].cached + seqs[size_t(s)].tokens; ++p)
        for (size_t e = 0; e < slotElems; ++e) {
          put(k, slot(s, p) + e, uniform(engine));
          put(v, slot(s, p) + e, uniform(engine));
        }

    const double scale = 1.0 / std::sqrt(double(headDim_));
    std::vector<double> reference(size_t(numTokens) * rowElems);
    const int group = numHeads_ / numKvHeads_;
    for (int s = 0; s < numSeqs; ++s)
      for (int t = qoIndptr[size_t(s)]; t < qoIndptr[size_t(s) + 1]; ++t) {
        const int pos = positions[size_t(t)];
        const int lo = slidingWindow > 0 ? std::max(0, pos - slidingWindow + 1) : 0;
        for (int h = 0; h < numHeads_; ++h) {
          const size_t qRow = size_t(t) * rowElems + size_t(h) * size_t(headDim_);
          const size_t kvHead = size_t(h / group) * size_t(headDim_);
          std::vector<double> logits;
          for (int j = lo; j <= pos; ++j) {
            double dot = 0;
            for (int d = 0; d < headDim_; ++d)
              dot += double(get(q, qRow + size_t(d))) * get(k, slot(s, j) + kvHead + size_t(d));
            logits.push_back(scale * dot);
          }
          const double top = *std::max_element(logits.begin(), logits.end());
          double sum = 0;
          for (double &x : logits)
            sum += x = std::exp(x - top);
          for (int d = 0; d < headDim_; ++d) {
            double o = 0;
            for (int j = lo; j <= pos; ++j)
              o += logits[size_t(j - lo)] * get(v, slot(s, j) + kvHead + size_t(d));
            reference[qRow + size_t(d)] = o / sum;
          }
        }
      }

    auto buffer = [&](const void *data, size_t bytes) {
      auto b = std::make_unique<DeviceBuffer>(*backend_, bytes);
      backend_->upload(b->get(), data, bytes);
      return b;
    };
    const auto dq = buffer(q.data(), q.size()), dk = buffer(k.data(), k.size()), dv = buffer(v.data(), v.size());
    const auto dpos = buffer(positions.data(), positions.size() * 4);
    const auto dqo = buffer(qoIndptr.data(), qoIndptr.size() * 4);
    const auto dkv = buffer(kvIndptr.data(), kvIndptr.size() * 4);
    const auto dpages = buffer(pageIndices.data(), pageIndices.size() * 4);
    const auto dlast = buffer(lastPageLen.data(), lastPageLen.size() * 4);
    const std::vector<char> notZeros(q.size(), 0x7f);
    const auto dout = buffer(notZeros.data(), notZeros.size());
    void *const buffers[] = {dq->get(),   dk->get(),    dv->get(),    dpos->get(), dqo->get(),
                             dkv->get(),  dpages->get(), dlast->get(), dout->get()};
    const plan::Scalar scalars[] = {{plan::ScalarKind::f32, float(scale), 0},
                                    {plan::ScalarKind::i32, 0.0f, slidingWindow},
                                    {plan::ScalarKind::num_tokens, 0.0f, 0},
                                    {plan::ScalarKind::num_seqs, 0.0f, 0}};
    backend_->launch(plan_->plan(), kernel_, buffers, scalars, runtime::BatchShape{numTokens, numSeqs});
    backend_->synchronize();
    std::vector<char> out(q.size());
    backend_->download(out.data(), dout->get(), out.size());

    // fp32 math; 16-bit outputs add their rounding (2^-9 relative for bf16),
    // and the tensor-core walk rounds the softmax weights to the dtype too.
    const double tolerance = element_ == cpu::ElementType::f32 ? 1e-5 : 1e-2;
    double worst = 0;
    int worstToken = -1, worstHead = -1;
    for (int t = 0; t < numTokens; ++t)
      for (int h = 0; h < numHeads_; ++h) {
        double error = 0, norm = 0;
        for (int d = 0; d < headDim_; ++d) {
          const size_t i = size_t(t) * rowElems + size_t(h) * size_t(headDim_) + size_t(d);
          const double diff = get(out, i) - reference[i];
          error += diff * diff;
          norm += reference[i] * reference[i];
        }
        const double relative = std::isfinite(error) ? std::sqrt(error / norm) : INFINITY;
        if (!(relative <= worst)) {
          worst = relative;
          worstToken = t, worstHead = h;
        }
      }
    EXPECT_LE(worst, tolerance) << "worst row: token " << worstToken << ", head " << worstHead;
  }

  int32_t kernel_ = -1;
  int numHeads_ = 0, numKvHeads_ = 0, headDim_ = 0, pageSize_ = 0;
  cpu::ElementType element_ = cpu::ElementType::f32;
};

TEST_F(BackendAttention, DecodeRowsAroundPageBoundaries) {
  expectNearReference({{0, 1}, {14, 1}, {15, 1}, {16, 1}, {100, 1}, {511, 1}, {1000, 1}}, 0);
}

TEST_F(BackendAttention, OneLongDecodeRow) {
  // 5000 keys: with 8 blocks splitting 313 pages, each walks about 39, more
  // than one load of page indices (32) covers.
  expectNearReference({{4999, 1}}, 0);
}

TEST_F(BackendAttention, ChunkedPrefillOfRaggedSequences) {
  expectNearReference({{0, 37}, {70, 5}, {3, 1}, {200, 19}, {0, 2}}, 0);
}

TEST_F(BackendAttention, LongPrefillWithoutClusters) {
  // Enough tiles that the CUDA backend launches no clusters on an engine
  // with 8 kv heads: prefill blocks then share their pages among 4 tiles (a
  // last group of 1 to 3 included); 600 cached keys make a walk of more pages
  // than one load of page indices covers.
  expectNearReference({{0, 300}, {150, 201}, {7, 133}, {20, 6}, {600, 40}}, 0);
}

TEST_F(BackendAttention, LargeDecodeBatch) {
  std::vector<Seq> seqs;
  for (int s = 0; s < 96; ++s)
    seqs.push_back({(s * 37) % 300, 1});
  expectNearReference(seqs, 0);
}

TEST_F(BackendAttention, SlidingWindow) {
  expectNearReference({{0, 37}, {70, 5}, {600, 1}, {40, 1}}, 40);
  expectNearReference({{0, 300}, {150, 201}}, 64);
}

} // namespace
