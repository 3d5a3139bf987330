// Unit tests for runtime/backend/cpu/CpuOps: every op against an independent
// double-precision reference written here (with the kernels' intermediate
// roundings to the element type), hand-computed cases, the batch/paging
// semantics of rope_kv_write and paged_attention, and the GEMM.
//
// Comparison: f32 results within 1e-6 relative (plus the scale of the summed
// terms where cancellation can occur); f16/bf16 results within 1 ulp of the
// rounded expected value, and equal to it for all but 2% of the elements.
#include "runtime/backend/cpu/CpuOps.h"

#include "runtime/weights/float16.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace llmc::cpu;
namespace fw = llmc::weights;

namespace {

// ---------------------------------------------------------------------------
// Typed arrays (conversions straight from float16.h, not through CpuOps)

constexpr ElementType kAllTypes[] = {ElementType::f32, ElementType::f16, ElementType::bf16};

const char *typeName(ElementType t) {
  switch (t) {
  case ElementType::f32: return "f32";
  case ElementType::f16: return "f16";
  case ElementType::bf16: return "bf16";
  }
  return "?";
}

size_t bytesOf(ElementType t) { return t == ElementType::f32 ? 4 : 2; }

class Array {
public:
  Array(ElementType t, size_t n) : type_(t), n_(n), bytes_(n * bytesOf(t)) {}

  ElementType type() const { return type_; }
  size_t size() const { return n_; }
  void *data() { return bytes_.data(); }
  const void *data() const { return bytes_.data(); }
  const std::vector<std::byte> &bytes() const { return bytes_; }

  double get(size_t i) const {
    if (type_ == ElementType::f32) {
      float f;
      std::memcpy(&f, &bytes_[i * 4], 4);
      return f;
    }
    uint16_t b = bits16(i);
    return type_ == ElementType::f16 ? fw::halfToFloat(b) : fw::bf16ToFloat(b);
  }
  // Rounded to the type through float.
  void set(size_t i, double v) {
    const float f = static_cast<float>(v);
    if (type_ == ElementType::f32) {
      std::memcpy(&bytes_[i * 4], &f, 4);
      return;
    }
    const uint16_t b = type_ == ElementType::f16 ? fw::floatToHalf(f) : fw::floatToBf16(f);
    std::memcpy(&bytes_[i * 2], &b, 2);
  }
  uint16_t bits16(size_t i) const {
    uint16_t b;
    std::memcpy(&b, &bytes_[i * 2], 2);
    return b;
  }
  void fill(double v) {
    for (size_t i = 0; i < n_; ++i) set(i, v);
  }

private:
  ElementType type_;
  size_t n_;
  std::vector<std::byte> bytes_;
};

Array randomArray(ElementType t, size_t n, std::mt19937 &rng, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Array a(t, n);
  for (size_t i = 0; i < n; ++i) a.set(i, dist(rng));
  return a;
}

// Rows [begin, end) of a matrix of `width` columns.
Array rows(const Array &a, size_t width, size_t begin, size_t end) {
  Array r(a.type(), (end - begin) * width);
  for (size_t i = 0; i < r.size(); ++i) r.set(i, a.get(begin * width + i));
  return r;
}

Array concat(const Array &a, const Array &b) {
  Array r(a.type(), a.size() + b.size());
  for (size_t i = 0; i < a.size(); ++i) r.set(i, a.get(i));
  for (size_t i = 0; i < b.size(); ++i) r.set(a.size() + i, b.get(i));
  return r;
}

// The reference's rounding to the element type: none for f32 (where the
// kernels' roundings vanish too).
double rt(ElementType t, double v) {
  if (t == ElementType::f32) return v;
  Array a(t, 1);
  a.set(0, v);
  return a.get(0);
}

// Distance in ulps between two 16-bit floats of the same format.
int ulpDistance(uint16_t a, uint16_t b) {
  auto ordered = [](uint16_t x) { return (x & 0x8000) ? -int(x & 0x7FFF) : int(x); };
  return std::abs(ordered(a) - ordered(b));
}

::testing::AssertionResult matches(const Array &actual, const std::vector<double> &expected,
                                   double rel, const std::vector<double> &magnitude) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "sizes " << actual.size() << " vs " << expected.size();
  Array rounded(actual.type(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) rounded.set(i, expected[i]);
  int failures = 0, inexact = 0;
  std::ostringstream first;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double a = actual.get(i), e = expected[i];
    bool ok;
    if (std::isnan(e) || std::isnan(a)) {
      ok = std::isnan(e) && std::isnan(a);
    } else if (actual.type() == ElementType::f32) {
      ok = std::abs(a - e) <= rel * (std::abs(e) + magnitude[i]);
    } else {
      const int ulps = ulpDistance(actual.bits16(i), rounded.bits16(i));
      ok = ulps <= 1;
      inexact += ulps == 1;
    }
    if (!ok && failures++ == 0)
      first << std::setprecision(10) << "element " << i << ": " << a << " vs expected " << e;
  }
  // fp32 versus double evaluation rarely changes a 16-bit rounding; a missing
  // or extra rounding step changes many.
  const size_t allowed_inexact = std::max<size_t>(1, expected.size() / 50);
  if (failures == 0 && size_t(inexact) <= allowed_inexact) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << typeName(actual.type()) << ": " << failures << " of " << expected.size()
         << " elements differ (" << inexact << " by 1 ulp, " << allowed_inexact
         << " allowed); first: " << first.str();
}

::testing::AssertionResult matches(const Array &actual, const std::vector<double> &expected,
                                   double magnitude = 0) {
  return matches(actual, expected, 1e-6, std::vector<double>(expected.size(), magnitude));
}

::testing::AssertionResult sameBits(const Array &a, const Array &b) {
  if (a.bytes() == b.bytes()) return ::testing::AssertionSuccess();
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  for (size_t i = 0;; ++i)
    if (std::memcmp(&a.bytes()[i * bytesOf(a.type())], &b.bytes()[i * bytesOf(a.type())],
                    bytesOf(a.type())) != 0)
      return ::testing::AssertionFailure()
             << "element " << i << " differs: " << a.get(i) << " vs " << b.get(i);
}

// ---------------------------------------------------------------------------
// Batches, paged caches and references for rope / attention

// One sequence of a forward: `count` new tokens at positions [start, start +
// count); afterwards its cache holds start + count positions, in the first
// ceil((start + count) / page_size) of `pages`.
struct SeqStep {
  int start, count;
  std::vector<int32_t> pages;
  int kvLen() const { return start + count; }
};

// The forward ABI arrays of a batch.
struct Batch {
  std::vector<int32_t> positions, qo_indptr{0}, kv_indptr{0}, kv_page_indices, kv_last_page_len;
  int tokens() const { return int(positions.size()); }
  int seqs() const { return int(kv_last_page_len.size()); }
};

Batch makeBatch(const std::vector<SeqStep> &steps, int page_size) {
  Batch b;
  for (const SeqStep &s : steps) {
    for (int p = s.start; p < s.kvLen(); ++p) b.positions.push_back(p);
    b.qo_indptr.push_back(b.qo_indptr.back() + s.count);
    const int pages = (s.kvLen() + page_size - 1) / page_size;
    if (size_t(pages) > s.pages.size()) throw std::logic_error("test batch: too few pages");
    b.kv_page_indices.insert(b.kv_page_indices.end(), s.pages.begin(), s.pages.begin() + pages);
    b.kv_indptr.push_back(b.kv_indptr.back() + pages);
    b.kv_last_page_len.push_back(pages > 0 ? s.kvLen() - (pages - 1) * page_size : 0);
  }
  return b;
}

// K and V caches [num_pages][page_size][num_kv_heads][head_dim], NaN where
// nothing was written (so reading a wrong slot shows).
struct Cache {
  HeadShape s;
  Array k, v;
  Cache(ElementType t, const HeadShape &shape, int num_pages)
      : s(shape), k(t, size_t(num_pages) * shape.page_size * shape.num_kv_heads * shape.head_dim),
        v(k) {
    k.fill(std::nan(""));
    v.fill(std::nan(""));
  }
  // Element offset of (position p, kv head h, dim 0) of a sequence on `pages`.
  size_t at(const std::vector<int32_t> &pages, int p, int h) const {
    const size_t page = size_t(pages[size_t(p / s.page_size)]);
    return ((page * s.page_size + size_t(p % s.page_size)) * s.num_kv_heads + size_t(h)) *
           s.head_dim;
  }
  // Random keys and values for positions [0, kvLen) of every sequence.
  void fillRandom(const std::vector<SeqStep> &steps, std::mt19937 &rng) {
    std::uniform_real_distribution<double> dist(-1, 1);
    for (const SeqStep &seq : steps)
      for (int p = 0; p < seq.kvLen(); ++p)
        for (int h = 0; h < s.num_kv_heads; ++h)
          for (int d = 0; d < s.head_dim; ++d) {
            k.set(at(seq.pages, p, h) + size_t(d), dist(rng));
            v.set(at(seq.pages, p, h) + size_t(d), dist(rng));
          }
  }
};

// HF's default rope frequencies 1 / theta^(2i / rotary_dim), as float.
std::vector<float> hfInvFreq(int rotary_dim, double theta = 10000.0) {
  std::vector<float> f(size_t(rotary_dim / 2));
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = float(1.0 / std::pow(theta, double(2 * i) / rotary_dim));
  return f;
}

// Reference rope of one head x (head_dim values) at `position`.
std::vector<double> refRope(ElementType t, const std::vector<double> &x, int position,
                            const std::vector<float> &inv_freq, int rotary_dim) {
  std::vector<double> y = x;
  const int half = rotary_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float angle = float(position) * inv_freq[size_t(i)]; // fp32 by definition
    const double c = rt(t, std::cos(double(angle))), s = rt(t, std::sin(double(angle)));
    const double x1 = x[size_t(i)], x2 = x[size_t(i + half)];
    y[size_t(i)] = rt(t, x1 * c) - rt(t, x2 * s);
    y[size_t(i + half)] = rt(t, x2 * c) + rt(t, x1 * s);
  }
  return y;
}

// Reference attention (double) of every query row of a batch over the keys
// in the cache, addressed through the test's own page arithmetic.
std::vector<double> refAttention(const Cache &c, const Array &q, const std::vector<SeqStep> &steps,
                                 double scale, int sliding_window) {
  const HeadShape &s = c.s;
  const int group = s.num_heads / s.num_kv_heads;
  std::vector<double> out;
  size_t row = 0;
  for (const SeqStep &seq : steps) {
    for (int pos = seq.start; pos < seq.kvLen(); ++pos, ++row) {
      const int lo = sliding_window > 0 ? std::max(0, pos - sliding_window + 1) : 0;
      for (int h = 0; h < s.num_heads; ++h) {
        const size_t q_at = (row * s.num_heads + size_t(h)) * s.head_dim;
        std::vector<double> logits;
        for (int j = lo; j <= pos; ++j) {
          double dot = 0;
          for (int d = 0; d < s.head_dim; ++d)
            dot += q.get(q_at + size_t(d)) * c.k.get(c.at(seq.pages, j, h / group) + size_t(d));
          logits.push_back(scale * dot);
        }
        const double mx = *std::max_element(logits.begin(), logits.end());
        double denom = 0;
        for (double &l : logits) denom += (l = std::exp(l - mx));
        for (int d = 0; d < s.head_dim; ++d) {
          double o = 0;
          for (int j = lo; j <= pos; ++j)
            o += logits[size_t(j - lo)] * c.v.get(c.at(seq.pages, j, h / group) + size_t(d));
          out.push_back(o / denom);
        }
      }
    }
  }
  return out;
}

Array runAttention(const Cache &c, const Array &q, const Batch &b, float scale,
                   int sliding_window) {
  Array out(q.type(), q.size());
  pagedAttention(q.type(), c.s, q.data(), c.k.data(), c.v.data(), b.positions.data(),
                 b.qo_indptr.data(), b.kv_indptr.data(), b.kv_page_indices.data(),
                 b.kv_last_page_len.data(), out.data(), scale, sliding_window, b.tokens(),
                 b.seqs());
  return out;
}

Array randomQ(ElementType t, const HeadShape &s, int tokens, std::mt19937 &rng) {
  return randomArray(t, size_t(tokens) * s.num_heads * s.head_dim, rng);
}

// rope_kv_write then paged_attention: the attention half of a decoder layer.
Array attentionLayer(const HeadShape &s, const Array &qkv, const Batch &b, Cache &cache) {
  const std::vector<float> inv_freq = hfInvFreq(s.rotary_dim);
  Array q(qkv.type(), size_t(b.tokens()) * s.num_heads * s.head_dim);
  ropeKvWrite(qkv.type(), s, qkv.data(), b.positions.data(), b.qo_indptr.data(), b.kv_indptr.data(),
              b.kv_page_indices.data(), inv_freq.data(), q.data(), cache.k.data(), cache.v.data(),
              b.tokens(), b.seqs());
  return runAttention(cache, q, b, 1.0f / std::sqrt(float(s.head_dim)), 0);
}

size_t qkvWidth(const HeadShape &s) {
  return size_t(s.num_heads + 2 * s.num_kv_heads) * s.head_dim;
}

// ---------------------------------------------------------------------------
// Elements

TEST(CpuOpsElements, LoadStoreAndRound) {
  EXPECT_EQ(elementBytes(ElementType::f32), 4u);
  EXPECT_EQ(elementBytes(ElementType::bf16), 2u);
  EXPECT_EQ(roundTo(ElementType::f32, 1.0f / 3), 1.0f / 3);
  EXPECT_EQ(roundTo(ElementType::bf16, 1.0f / 3), fw::bf16ToFloat(fw::floatToBf16(1.0f / 3)));
  EXPECT_EQ(roundTo(ElementType::f16, 70000.f), std::numeric_limits<float>::infinity());
  for (ElementType t : kAllTypes) {
    Array a(t, 3);
    storeElement(t, a.data(), 1, 1.0f / 3);
    EXPECT_EQ(loadElement(t, a.data(), 1), roundTo(t, 1.0f / 3)) << typeName(t);
    EXPECT_EQ(a.get(1), roundTo(t, 1.0f / 3)) << typeName(t);
  }
}

// ---------------------------------------------------------------------------
// embedding, gather_rows

TEST(CpuOps, EmbeddingCopiesTableRows) {
  std::mt19937 rng(1);
  for (ElementType t : kAllTypes) {
    const int hidden = 6;
    Array table = randomArray(t, 10 * hidden, rng);
    const std::vector<int32_t> ids = {3, 0, 9, 3};
    Array out(t, ids.size() * hidden);
    embedding(t, hidden, ids.data(), table.data(), out.data(), int(ids.size()));
    for (size_t i = 0; i < ids.size(); ++i)
      EXPECT_TRUE(sameBits(rows(out, hidden, i, i + 1),
                           rows(table, hidden, size_t(ids[i]), size_t(ids[i]) + 1)))
          << typeName(t) << " row " << i;
  }
}

TEST(CpuOps, GatherRowsCopiesRows) {
  std::mt19937 rng(2);
  for (ElementType t : kAllTypes) {
    const int hidden = 5;
    Array x = randomArray(t, 7 * hidden, rng);
    const std::vector<int32_t> picked = {6, 2, 2};
    Array out(t, picked.size() * hidden);
    gatherRows(t, hidden, x.data(), picked.data(), out.data(), int(picked.size()));
    for (size_t i = 0; i < picked.size(); ++i)
      EXPECT_TRUE(sameBits(rows(out, hidden, i, i + 1),
                           rows(x, hidden, size_t(picked[i]), size_t(picked[i]) + 1)))
          << typeName(t) << " row " << i;
  }
}

// ---------------------------------------------------------------------------
// rms_norm, add_rms_norm

// Reference rms_norm of `num_rows` rows: T(w * T(h * rsqrt(mean(h^2) + eps))).
std::vector<double> refRmsNorm(ElementType t, const std::vector<double> &h, const Array &w,
                               double eps) {
  const size_t hidden = w.size();
  std::vector<double> out;
  for (size_t r = 0; r < h.size() / hidden; ++r) {
    double ss = 0;
    for (size_t i = 0; i < hidden; ++i) ss += h[r * hidden + i] * h[r * hidden + i];
    const double inv_rms = 1 / std::sqrt(ss / double(hidden) + eps);
    for (size_t i = 0; i < hidden; ++i)
      out.push_back(w.get(i) * rt(t, h[r * hidden + i] * inv_rms));
  }
  return out;
}

std::vector<double> values(const Array &a) {
  std::vector<double> v(a.size());
  for (size_t i = 0; i < a.size(); ++i) v[i] = a.get(i);
  return v;
}

TEST(CpuOps, RmsNormHandComputed) {
  for (ElementType t : kAllTypes) {
    Array x(t, 2), w(t, 2), out(t, 2);
    x.set(0, 3);
    x.set(1, 4);
    w.fill(1);
    rmsNorm(t, 2, x.data(), w.data(), out.data(), 0.0f, 1);
    EXPECT_TRUE(matches(out, {3 / std::sqrt(12.5), 4 / std::sqrt(12.5)})) << typeName(t);
  }
}

TEST(CpuOps, RmsNormMatchesReference) {
  std::mt19937 rng(3);
  for (ElementType t : kAllTypes) {
    const int hidden = 96, num_rows = 5;
    const float eps = 1e-6f;
    Array x = randomArray(t, size_t(hidden) * num_rows, rng, -2, 2);
    Array w = randomArray(t, hidden, rng, 0.5, 1.5);
    Array out(t, x.size());
    rmsNorm(t, hidden, x.data(), w.data(), out.data(), eps, num_rows);
    EXPECT_TRUE(matches(out, refRmsNorm(t, values(x), w, eps)));
    // In place (out == x) gives the same bits.
    Array in_place = x;
    rmsNorm(t, hidden, in_place.data(), w.data(), in_place.data(), eps, num_rows);
    EXPECT_TRUE(sameBits(in_place, out)) << typeName(t);
  }
}

TEST(CpuOps, AddRmsNormMatchesReference) {
  std::mt19937 rng(4);
  for (ElementType t : kAllTypes) {
    const int hidden = 40, num_rows = 3;
    const float eps = 1e-5f;
    Array a = randomArray(t, size_t(hidden) * num_rows, rng, -2, 2);
    Array b = randomArray(t, a.size(), rng, -2, 2);
    Array w = randomArray(t, hidden, rng, 0.5, 1.5);
    Array sum(t, a.size()), norm(t, a.size());
    addRmsNorm(t, hidden, a.data(), b.data(), w.data(), sum.data(), norm.data(), eps, num_rows);
    std::vector<double> s(a.size());
    for (size_t i = 0; i < s.size(); ++i) s[i] = rt(t, a.get(i) + b.get(i));
    EXPECT_TRUE(matches(sum, s));
    EXPECT_TRUE(matches(norm, refRmsNorm(t, s, w, eps)));
    // The residual updated in place (sum_out == a) gives the same bits.
    Array residual = a, norm2(t, a.size());
    addRmsNorm(t, hidden, residual.data(), b.data(), w.data(), residual.data(), norm2.data(), eps,
               num_rows);
    EXPECT_TRUE(sameBits(residual, sum)) << typeName(t);
    EXPECT_TRUE(sameBits(norm2, norm)) << typeName(t);
  }
}

// ---------------------------------------------------------------------------
// silu_mul

TEST(CpuOps, SiluMulHandComputed) {
  Array gate_up(ElementType::f32, 4), out(ElementType::f32, 2);
  gate_up.set(0, 0); // gate
  gate_up.set(1, 1);
  gate_up.set(2, 5); // up
  gate_up.set(3, 2);
  siluMul(ElementType::f32, 2, gate_up.data(), out.data(), 1);
  EXPECT_TRUE(matches(out, {0.0, 2 / (1 + std::exp(-1.0))}));
}

TEST(CpuOps, SiluMulMatchesReference) {
  std::mt19937 rng(5);
  for (ElementType t : kAllTypes) {
    const int intermediate = 40, tokens = 3;
    Array gate_up = randomArray(t, size_t(2 * intermediate) * tokens, rng, -6, 6);
    Array out(t, size_t(intermediate) * tokens);
    siluMul(t, intermediate, gate_up.data(), out.data(), tokens);
    std::vector<double> expected;
    for (int tok = 0; tok < tokens; ++tok)
      for (int i = 0; i < intermediate; ++i) {
        const double g = gate_up.get(size_t(tok * 2 * intermediate + i));
        const double up = gate_up.get(size_t(tok * 2 * intermediate + intermediate + i));
        expected.push_back(rt(t, g / (1 + std::exp(-g))) * up);
      }
    EXPECT_TRUE(matches(out, expected));
  }
}

// ---------------------------------------------------------------------------
// rope_kv_write

TEST(CpuOps, RopeAtPositionZeroIsIdentity) {
  std::mt19937 rng(6);
  for (ElementType t : kAllTypes) {
    const HeadShape s{2, 1, 8, 8, 4};
    // Three one-token sequences, all at position 0, on pages 2, 0, 1.
    const std::vector<SeqStep> steps = {{0, 1, {2}}, {0, 1, {0}}, {0, 1, {1}}};
    const Batch b = makeBatch(steps, s.page_size);
    const size_t width = qkvWidth(s), hd = size_t(s.head_dim);
    Array qkv = randomArray(t, 3 * width, rng);
    Cache cache(t, s, 3);
    Array q(t, 3 * hd * s.num_heads);
    const std::vector<float> inv_freq = hfInvFreq(s.rotary_dim);
    ropeKvWrite(t, s, qkv.data(), b.positions.data(), b.qo_indptr.data(), b.kv_indptr.data(),
                b.kv_page_indices.data(), inv_freq.data(), q.data(), cache.k.data(), cache.v.data(),
                b.tokens(), b.seqs());
    for (size_t tok = 0; tok < 3; ++tok) {
      for (size_t i = 0; i < 2 * hd; ++i)
        EXPECT_EQ(q.get(tok * 2 * hd + i), qkv.get(tok * width + i)) << typeName(t);
      for (size_t i = 0; i < hd; ++i) {
        EXPECT_EQ(cache.k.get(cache.at(steps[tok].pages, 0, 0) + i),
                  qkv.get(tok * width + 2 * hd + i))
            << typeName(t);
        EXPECT_EQ(cache.v.get(cache.at(steps[tok].pages, 0, 0) + i),
                  qkv.get(tok * width + 3 * hd + i))
            << typeName(t);
      }
    }
  }
}

TEST(CpuOps, RopeRotatesByPositionTimesInvFreq) {
  // One pair per head, inv_freq 1: (x1, x2) rotates by `position` radians.
  const HeadShape s{1, 1, 2, 2, 4};
  const std::vector<SeqStep> steps = {{3, 1, {0}}}; // position 3
  const Batch b = makeBatch(steps, s.page_size);
  Array qkv(ElementType::f32, 6), q(ElementType::f32, 2);
  qkv.set(0, 1); // q = (1, 0)
  qkv.set(1, 0);
  qkv.set(2, 0); // k = (0, 1)
  qkv.set(3, 1);
  qkv.set(4, 7); // v = (7, 8)
  qkv.set(5, 8);
  Cache cache(ElementType::f32, s, 1);
  const float inv_freq[] = {1.0f};
  ropeKvWrite(ElementType::f32, s, qkv.data(), b.positions.data(), b.qo_indptr.data(),
              b.kv_indptr.data(), b.kv_page_indices.data(), inv_freq, q.data(), cache.k.data(),
              cache.v.data(), 1, 1);
  EXPECT_TRUE(matches(q, {std::cos(3.0), std::sin(3.0)}, 1.0));
  EXPECT_TRUE(matches(rows(cache.k, 2, 3, 4), {-std::sin(3.0), std::cos(3.0)}, 1.0));
  EXPECT_TRUE(matches(rows(cache.v, 2, 3, 4), {7, 8}));
}

TEST(CpuOps, RopeKvWriteMatchesReference) {
  std::mt19937 rng(7);
  for (ElementType t : kAllTypes) {
    const HeadShape s{4, 2, 16, 12, 4}; // partial rotary: dims 12..15 pass through
    // Two sequences on shuffled pages; one far along (positions ~1000: fp32 angles).
    std::vector<SeqStep> steps = {{0, 3, {5}}, {1001, 2, {}}};
    for (int p = 0; p < 251; ++p) steps[1].pages.push_back(p == 250 ? 2 : 300 - p);
    const Batch b = makeBatch(steps, s.page_size);
    const size_t width = qkvWidth(s), hd = size_t(s.head_dim);
    Array qkv = randomArray(t, size_t(b.tokens()) * width, rng);
    Cache cache(t, s, 301);
    Array q(t, size_t(b.tokens()) * s.num_heads * hd);
    const std::vector<float> inv_freq = hfInvFreq(s.rotary_dim);
    ropeKvWrite(t, s, qkv.data(), b.positions.data(), b.qo_indptr.data(), b.kv_indptr.data(),
                b.kv_page_indices.data(), inv_freq.data(), q.data(), cache.k.data(), cache.v.data(),
                b.tokens(), b.seqs());

    std::vector<double> expected_q;
    size_t tok = 0;
    std::vector<size_t> written; // cache offsets of the written slots
    for (const SeqStep &seq : steps) {
      for (int pos = seq.start; pos < seq.kvLen(); ++pos, ++tok) {
        auto head = [&](int h) {
          std::vector<double> x(hd);
          for (size_t i = 0; i < hd; ++i) x[i] = qkv.get(tok * width + size_t(h) * hd + i);
          return x;
        };
        for (int h = 0; h < s.num_heads; ++h) {
          const std::vector<double> y = refRope(t, head(h), pos, inv_freq, s.rotary_dim);
          expected_q.insert(expected_q.end(), y.begin(), y.end());
        }
        for (int h = 0; h < s.num_kv_heads; ++h) {
          const size_t at = cache.at(seq.pages, pos, h);
          Array k_slot(t, hd), v_slot(t, hd);
          for (size_t i = 0; i < hd; ++i) {
            k_slot.set(i, cache.k.get(at + i));
            v_slot.set(i, cache.v.get(at + i));
          }
          EXPECT_TRUE(
              matches(k_slot, refRope(t, head(s.num_heads + h), pos, inv_freq, s.rotary_dim), 1.0))
              << "k of token " << tok << " head " << h;
          EXPECT_TRUE(matches(v_slot, head(s.num_heads + s.num_kv_heads + h)))
              << "v of token " << tok << " head " << h;
          for (size_t i = 0; i < hd; ++i) written.push_back(at + i);
        }
      }
    }
    EXPECT_TRUE(matches(q, expected_q, 1.0));
    // Nothing else in the caches changed.
    std::sort(written.begin(), written.end());
    for (size_t i = 0; i < cache.k.size(); ++i) {
      if (std::binary_search(written.begin(), written.end(), i)) continue;
      ASSERT_TRUE(std::isnan(cache.k.get(i)) && std::isnan(cache.v.get(i)))
          << typeName(t) << ": cache element " << i << " was written";
    }
  }
}

TEST(CpuOps, RopeRejectsBadShapes) {
  Array dummy(ElementType::f32, 64);
  const int32_t zeros[2] = {0, 0};
  const float inv_freq[4] = {};
  for (const HeadShape &s :
       {HeadShape{2, 1, 8, 7, 4}, HeadShape{2, 1, 8, 10, 4}, HeadShape{3, 2, 8, 8, 4}}) {
    EXPECT_THROW(ropeKvWrite(ElementType::f32, s, dummy.data(), zeros, zeros, zeros, zeros,
                             inv_freq, dummy.data(), dummy.data(), dummy.data(), 0, 1),
                 std::invalid_argument);
  }
}

// ---------------------------------------------------------------------------
// paged_attention

TEST(CpuOps, AttentionWithOneKeyReturnsItsValue) {
  std::mt19937 rng(8);
  for (ElementType t : kAllTypes) {
    const HeadShape s{2, 1, 8, 0, 4};
    const std::vector<SeqStep> steps = {{0, 1, {1}}};
    Cache cache(t, s, 2);
    cache.fillRandom(steps, rng);
    Array q = randomQ(t, s, 1, rng);
    Array out = runAttention(cache, q, makeBatch(steps, s.page_size), 0.3f, 0);
    const Array v = rows(cache.v, size_t(s.head_dim), 4, 5); // page 1, slot 0
    EXPECT_TRUE(sameBits(rows(out, 8, 0, 1), v)) << typeName(t);
    EXPECT_TRUE(sameBits(rows(out, 8, 1, 2), v)) << typeName(t);
  }
}

TEST(CpuOps, AttentionMatchesReference) {
  std::mt19937 rng(9);
  for (ElementType t : kAllTypes) {
    for (int window : {0, 3}) {
      const HeadShape s{4, 2, 16, 0, 4};
      // A prefill, a decode step over 6 cached positions, a chunk after 2: shuffled pages.
      const std::vector<SeqStep> steps = {{0, 5, {7, 2}}, {6, 1, {0, 5}}, {2, 4, {3, 6}}};
      Cache cache(t, s, 8);
      cache.fillRandom(steps, rng);
      const Batch b = makeBatch(steps, s.page_size);
      Array q = randomQ(t, s, b.tokens(), rng);
      const float scale = 0.25f;
      Array out = runAttention(cache, q, b, scale, window);
      EXPECT_TRUE(matches(out, refAttention(cache, q, steps, scale, window), 1.0))
          << "window " << window;
    }
  }
}

TEST(CpuOps, AttentionIsCausal) {
  std::mt19937 rng(10);
  for (ElementType t : {ElementType::f32, ElementType::bf16}) {
    const HeadShape s{2, 2, 8, 0, 4};
    const std::vector<SeqStep> steps = {{0, 6, {1, 0}}};
    Cache cache(t, s, 2);
    cache.fillRandom(steps, rng);
    const Batch b = makeBatch(steps, s.page_size);
    Array q = randomQ(t, s, 6, rng);
    const Array before = runAttention(cache, q, b, 0.5f, 0);
    for (int h = 0; h < s.num_kv_heads; ++h) // a new key and value at position 4
      for (size_t d = 0; d < 8; ++d) {
        cache.k.set(cache.at(steps[0].pages, 4, h) + d, 3.0);
        cache.v.set(cache.at(steps[0].pages, 4, h) + d, -5.0);
      }
    const Array after = runAttention(cache, q, b, 0.5f, 0);
    const size_t row = size_t(s.num_heads * s.head_dim);
    EXPECT_TRUE(sameBits(rows(after, row, 0, 4), rows(before, row, 0, 4))) << typeName(t);
    EXPECT_FALSE(sameBits(rows(after, row, 4, 5), rows(before, row, 4, 5))) << typeName(t);
    EXPECT_FALSE(sameBits(rows(after, row, 5, 6), rows(before, row, 5, 6))) << typeName(t);
  }
}

TEST(CpuOps, SlidingWindowExcludesOldKeys) {
  std::mt19937 rng(11);
  const ElementType t = ElementType::f32;
  const HeadShape s{2, 1, 8, 0, 4};
  const std::vector<SeqStep> steps = {{0, 8, {0, 1}}};
  Cache cache(t, s, 2);
  cache.fillRandom(steps, rng);
  const Batch b = makeBatch(steps, s.page_size);
  Array q = randomQ(t, s, 8, rng);
  const int window = 3; // position p sees keys p-2, p-1, p
  const Array before = runAttention(cache, q, b, 0.5f, window);
  EXPECT_TRUE(matches(before, refAttention(cache, q, steps, 0.5, window), 1.0));
  for (int p = 0; p < 5; ++p) // new keys 0..4
    for (size_t d = 0; d < 8; ++d) {
      cache.k.set(cache.at(steps[0].pages, p, 0) + d, 2.0);
      cache.v.set(cache.at(steps[0].pages, p, 0) + d, 9.0);
    }
  const Array after = runAttention(cache, q, b, 0.5f, window);
  const size_t row = 16;
  EXPECT_TRUE(sameBits(rows(after, row, 7, 8), rows(before, row, 7, 8)));  // keys 5..7
  EXPECT_FALSE(sameBits(rows(after, row, 6, 7), rows(before, row, 6, 7))); // keys 4..6
  // Without a window, the last row sees the changed keys.
  EXPECT_FALSE(
      sameBits(rows(runAttention(cache, q, b, 0.5f, 0), row, 7, 8), rows(before, row, 7, 8)));
}

TEST(CpuOps, GqaQueryHeadsShareTheirKvHead) {
  std::mt19937 rng(12);
  const ElementType t = ElementType::f32;
  const HeadShape s{4, 2, 8, 0, 4}; // heads 0, 1 -> kv head 0; heads 2, 3 -> kv head 1
  const std::vector<SeqStep> steps = {{0, 3, {0}}};
  Cache cache(t, s, 1);
  cache.fillRandom(steps, rng);
  const Batch b = makeBatch(steps, s.page_size);
  Array q = randomQ(t, s, 3, rng);
  for (size_t tok = 0; tok < 3; ++tok) // every query head of a token the same
    for (size_t h = 1; h < 4; ++h)
      for (size_t d = 0; d < 8; ++d) q.set((tok * 4 + h) * 8 + d, q.get(tok * 32 + d));
  const Array out = runAttention(cache, q, b, 0.5f, 0);
  EXPECT_TRUE(matches(out, refAttention(cache, q, steps, 0.5, 0), 1.0));
  auto head = [](const Array &a, size_t tok, size_t h) {
    return rows(a, 8, tok * 4 + h, tok * 4 + h + 1);
  };
  for (size_t tok = 0; tok < 3; ++tok) {
    EXPECT_TRUE(sameBits(head(out, tok, 0), head(out, tok, 1)));
    EXPECT_TRUE(sameBits(head(out, tok, 2), head(out, tok, 3)));
    EXPECT_FALSE(sameBits(head(out, tok, 0), head(out, tok, 2)));
  }
  // Changing kv head 1 leaves heads 0 and 1 alone.
  for (int p = 0; p < 3; ++p)
    for (size_t d = 0; d < 8; ++d) cache.v.set(cache.at(steps[0].pages, p, 1) + d, 4.0);
  const Array after = runAttention(cache, q, b, 0.5f, 0);
  for (size_t tok = 0; tok < 3; ++tok) {
    EXPECT_TRUE(sameBits(head(after, tok, 0), head(out, tok, 0)));
    EXPECT_TRUE(sameBits(head(after, tok, 1), head(out, tok, 1)));
    EXPECT_FALSE(sameBits(head(after, tok, 2), head(out, tok, 2)));
  }
}

TEST(CpuOps, AttentionRespectsTheLastPageLength) {
  std::mt19937 rng(13);
  for (ElementType t : kAllTypes) {
    const HeadShape s{2, 1, 8, 0, 4};
    // 6 keys: page 3 full, page 1 holds 2 (slots 2, 3 are NaN, like every unwritten slot).
    const std::vector<SeqStep> steps = {{0, 6, {3, 1}}};
    Cache cache(t, s, 4);
    cache.fillRandom(steps, rng);
    Batch b = makeBatch(steps, s.page_size);
    ASSERT_EQ(b.kv_last_page_len[0], 2);
    Array q = randomQ(t, s, 6, rng);
    const Array out = runAttention(cache, q, b, 0.5f, 0);
    EXPECT_TRUE(matches(out, refAttention(cache, q, steps, 0.5, 0), 1.0));
    // Query rows at positions past the cached keys see only keys 0..5: the
    // same as a query at position 5.
    const Array last = rows(out, 16, 5, 6);
    Batch beyond = b;
    beyond.positions = {5, 6, 7, 7, 6, 5};
    Array q_last(t, 6 * 16);
    for (size_t r = 0; r < 6; ++r)
      for (size_t i = 0; i < 16; ++i) q_last.set(r * 16 + i, q.get(5 * 16 + i));
    const Array out_beyond = runAttention(cache, q_last, beyond, 0.5f, 0);
    for (size_t r = 0; r < 6; ++r)
      EXPECT_TRUE(sameBits(rows(out_beyond, 16, r, r + 1), last)) << typeName(t) << " row " << r;
  }
}

TEST(CpuOps, AttentionRowWithoutKeysIsZero) {
  const HeadShape s{2, 1, 8, 0, 4};
  Cache cache(ElementType::bf16, s, 1); // all NaN
  Batch b;                              // one sequence with no cached page
  b.positions = {0};
  b.qo_indptr = {0, 1};
  b.kv_indptr = {0, 0};
  b.kv_last_page_len = {0};
  Array q(ElementType::bf16, 16);
  q.fill(1);
  const Array out = runAttention(cache, q, b, 1.0f, 0);
  EXPECT_TRUE(matches(out, std::vector<double>(16, 0.0)));
}

// ---------------------------------------------------------------------------
// rope_kv_write + paged_attention over batches

TEST(CpuOps, RaggedBatchEqualsSequencesAlone) {
  std::mt19937 rng(14);
  for (ElementType t : {ElementType::f32, ElementType::bf16}) {
    const HeadShape s{4, 2, 8, 8, 4};
    const size_t width = qkvWidth(s), out_width = size_t(s.num_heads * s.head_dim);
    // Three sequences on shuffled pages of one pool: a prefill step, then a
    // step in which sequence 1 has no tokens.
    const std::vector<std::vector<int32_t>> pages = {{9, 4, 11}, {6}, {0, 10, 3}};
    const std::vector<std::vector<SeqStep>> batched_steps = {
        {{0, 5, pages[0]}, {0, 1, pages[1]}, {0, 7, pages[2]}},
        {{5, 2, pages[0]}, {1, 0, pages[1]}, {7, 3, pages[2]}}};
    Cache batched_cache(t, s, 12);
    std::vector<std::vector<Array>> qkv(3), batched_out(3); // [seq][step]
    for (const auto &steps : batched_steps) {
      Array all(t, 0);
      for (size_t i = 0; i < 3; ++i) {
        qkv[i].push_back(randomArray(t, size_t(steps[i].count) * width, rng));
        all = concat(all, qkv[i].back());
      }
      const Array out = attentionLayer(s, all, makeBatch(steps, s.page_size), batched_cache);
      size_t row = 0;
      for (size_t i = 0; i < 3; ++i) {
        batched_out[i].push_back(rows(out, out_width, row, row + size_t(steps[i].count)));
        row += size_t(steps[i].count);
      }
    }
    for (size_t i = 0; i < 3; ++i) {
      Cache alone_cache(t, s, 12);
      for (size_t step = 0; step < 2; ++step) {
        const Array out = attentionLayer(
            s, qkv[i][step], makeBatch({batched_steps[step][i]}, s.page_size), alone_cache);
        EXPECT_TRUE(sameBits(out, batched_out[i][step]))
            << typeName(t) << " sequence " << i << " step " << step;
      }
      for (int p = 0; p < batched_steps[1][i].kvLen(); ++p) {
        const size_t at = alone_cache.at(pages[i], p, 0);
        EXPECT_TRUE(
            sameBits(rows(alone_cache.k, 1, at, at + 16), rows(batched_cache.k, 1, at, at + 16)));
        EXPECT_TRUE(
            sameBits(rows(alone_cache.v, 1, at, at + 16), rows(batched_cache.v, 1, at, at + 16)));
      }
    }
  }
}

TEST(CpuOps, ChunkedPrefillEqualsOneCall) {
  std::mt19937 rng(15);
  for (ElementType t : kAllTypes) {
    const HeadShape s{4, 1, 8, 6, 4};
    const size_t width = qkvWidth(s);
    const std::vector<int32_t> pages = {2, 0};
    const Array qkv = randomArray(t, 8 * width, rng);

    Cache one_cache(t, s, 3);
    const Array one = attentionLayer(s, qkv, makeBatch({{0, 8, pages}}, s.page_size), one_cache);

    Cache chunk_cache(t, s, 3);
    const Array first = attentionLayer(s, rows(qkv, width, 0, 5),
                                       makeBatch({{0, 5, pages}}, s.page_size), chunk_cache);
    const Array second = attentionLayer(s, rows(qkv, width, 5, 8),
                                        makeBatch({{5, 3, pages}}, s.page_size), chunk_cache);
    EXPECT_TRUE(sameBits(concat(first, second), one)) << typeName(t);
    EXPECT_TRUE(sameBits(chunk_cache.k, one_cache.k)) << typeName(t);
    EXPECT_TRUE(sameBits(chunk_cache.v, one_cache.v)) << typeName(t);
  }
}

// ---------------------------------------------------------------------------
// gemm

struct GemmCase {
  int64_t m, n, k;
};

// Naive double c = a w^T (+ bias) and, per element, sum |a w| + |bias| (the
// scale of fp32 summation error).
void refGemm(const GemmCase &g, const Array &a, const Array &w, const Array *bias,
             std::vector<double> &c, std::vector<double> &magnitude) {
  c.assign(size_t(g.m * g.n), 0);
  magnitude.assign(c.size(), 0);
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      double sum = 0, mag = 0;
      for (int64_t kk = 0; kk < g.k; ++kk) {
        const double p = a.get(size_t(i * g.k + kk)) * w.get(size_t(j * g.k + kk));
        sum += p;
        mag += std::abs(p);
      }
      if (bias) {
        sum += bias->get(size_t(j));
        mag += std::abs(bias->get(size_t(j)));
      }
      c[size_t(i * g.n + j)] = sum;
      magnitude[size_t(i * g.n + j)] = mag;
    }
}

// fp32 summation of k terms plus a bias: error <= (k + 1) u sum|terms|, u = 2^-24.
double gemmRel(const GemmCase &g) { return double(g.k + 2) * std::ldexp(1.0, -24); }

TEST(CpuOpsGemm, MatchesNaiveLoop) {
  std::mt19937 rng(16);
  for (GemmCase g : {GemmCase{7, 13, 29}, GemmCase{1, 70, 300}, GemmCase{3, 130, 600}}) {
    for (ElementType in : kAllTypes) {
      for (ElementType out : {ElementType::f32, in}) {
        for (bool with_bias : {false, true}) {
          Array a = randomArray(in, size_t(g.m * g.k), rng);
          Array w = randomArray(in, size_t(g.n * g.k), rng);
          Array bias = randomArray(in, size_t(g.n), rng);
          Array c(out, size_t(g.m * g.n));
          gemm(in, out, g.m, g.n, g.k, a.data(), w.data(), with_bias ? bias.data() : nullptr,
               c.data());
          std::vector<double> expected, magnitude;
          refGemm(g, a, w, with_bias ? &bias : nullptr, expected, magnitude);
          EXPECT_TRUE(matches(c, expected, gemmRel(g), magnitude))
              << g.m << "x" << g.n << "x" << g.k << " " << typeName(in) << " -> " << typeName(out)
              << (with_bias ? " with bias" : "");
        }
      }
    }
  }
}

TEST(CpuOpsGemm, ResultDoesNotDependOnThreadCount) {
  std::mt19937 rng(17);
  const GemmCase g{64, 512, 256};
  for (ElementType in : {ElementType::f32, ElementType::bf16}) {
    for (ElementType out : {ElementType::f32, in}) {
      Array a = randomArray(in, size_t(g.m * g.k), rng);
      Array w = randomArray(in, size_t(g.n * g.k), rng);
      Array bias = randomArray(in, size_t(g.n), rng);
      Array single(out, size_t(g.m * g.n));
      gemm(in, out, g.m, g.n, g.k, a.data(), w.data(), bias.data(), single.data(), 1);
      std::vector<double> expected, magnitude;
      refGemm(g, a, w, &bias, expected, magnitude);
      EXPECT_TRUE(matches(single, expected, gemmRel(g), magnitude));
      for (int threads : {2, 3, 4, 0}) {
        Array c(out, size_t(g.m * g.n));
        gemm(in, out, g.m, g.n, g.k, a.data(), w.data(), bias.data(), c.data(), threads);
        EXPECT_TRUE(sameBits(c, single))
            << threads << " threads, " << typeName(in) << " -> " << typeName(out);
      }
    }
  }
}

TEST(CpuOpsGemm, RowsDoNotDependOnTheBatch) {
  std::mt19937 rng(18);
  const GemmCase g{9, 100, 700};
  const ElementType in = ElementType::bf16;
  Array a = randomArray(in, size_t(g.m * g.k), rng);
  Array w = randomArray(in, size_t(g.n * g.k), rng);
  Array c(ElementType::f32, size_t(g.m * g.n));
  gemm(in, ElementType::f32, g.m, g.n, g.k, a.data(), w.data(), nullptr, c.data());
  for (size_t i = 0; i < size_t(g.m); ++i) {
    const Array a_row = rows(a, size_t(g.k), i, i + 1);
    Array c_row(ElementType::f32, size_t(g.n));
    gemm(in, ElementType::f32, 1, g.n, g.k, a_row.data(), w.data(), nullptr, c_row.data());
    EXPECT_TRUE(sameBits(c_row, rows(c, size_t(g.n), i, i + 1))) << "row " << i;
  }
}

TEST(CpuOpsGemm, EmptySumIsTheBias) {
  Array bias(ElementType::bf16, 3), c(ElementType::f32, 6);
  bias.set(0, 1);
  bias.set(1, -2);
  bias.set(2, 0.5);
  gemm(ElementType::bf16, ElementType::f32, 2, 3, 0, nullptr, nullptr, bias.data(), c.data());
  EXPECT_TRUE(matches(c, {1, -2, 0.5, 1, -2, 0.5}));
}

TEST(CpuOpsGemm, RejectsOtherOutputTypes) {
  Array x(ElementType::bf16, 4), c(ElementType::f16, 4);
  EXPECT_THROW(
      gemm(ElementType::bf16, ElementType::f16, 2, 2, 2, x.data(), x.data(), nullptr, c.data()),
      std::invalid_argument);
}

} // namespace
