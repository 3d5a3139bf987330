#include "runtime/backend/cpu/CpuOps.h"

#include "runtime/support/Math.h"
#include "runtime/weights/float16.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// Rounding points are explicit (roundTo / storeElement). For f32 some of them
// are plain float operations that a compiler may fuse into an FMA (GCC does so
// by default in C++ whenever the target has FMA: -march=haswell or later,
// aarch64), e.g. rope's x1 * c - x2 * s, which the kernel keeps unfused with
// __fmul_rn. The x86-64 baseline has no FMA; other targets should compile this
// file with -ffp-contract=off.

namespace llmc::cpu {

// ---- elements ----------------------------------------------------------------

size_t elementBytes(ElementType t) {
  switch (t) {
  case ElementType::f32: return 4;
  case ElementType::f16:
  case ElementType::bf16: return 2;
  }
  throw std::invalid_argument("unknown ElementType");
}

// memcpy rather than typed pointers: callers hand in arrays of any C++ type.
void loadElements(ElementType t, const void *base, int64_t at, int64_t count, float *dst) {
  const auto *p = static_cast<const std::byte *>(base) + at * int64_t(elementBytes(t));
  if (t == ElementType::f32) {
    std::memcpy(dst, p, size_t(count) * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    uint16_t bits;
    std::memcpy(&bits, p + 2 * i, sizeof bits);
    dst[i] = t == ElementType::f16 ? weights::halfToFloat(bits) : weights::bf16ToFloat(bits);
  }
}

float loadElement(ElementType t, const void *base, int64_t i) {
  float v;
  loadElements(t, base, i, 1, &v);
  return v;
}

void storeElement(ElementType t, void *base, int64_t i, float v) {
  auto *p = static_cast<std::byte *>(base) + i * int64_t(elementBytes(t));
  if (t == ElementType::f32) {
    std::memcpy(p, &v, sizeof v);
    return;
  }
  const uint16_t bits = t == ElementType::f16 ? weights::floatToHalf(v) : weights::floatToBf16(v);
  std::memcpy(p, &bits, sizeof bits);
}

float roundTo(ElementType t, float v) {
  switch (t) {
  case ElementType::f32: return v;
  case ElementType::f16: return weights::halfToFloat(weights::floatToHalf(v));
  case ElementType::bf16: return weights::bf16ToFloat(weights::floatToBf16(v));
  }
  throw std::invalid_argument("unknown ElementType");
}

namespace {

// dst[dst_at, dst_at + count) = src[src_at, ...), bit for bit (element offsets).
void copyElements(ElementType t, const void *src, int64_t src_at, void *dst, int64_t dst_at,
                  int64_t count) {
  const int64_t bytes = int64_t(elementBytes(t));
  std::memmove(static_cast<std::byte *>(dst) + dst_at * bytes,
               static_cast<const std::byte *>(src) + src_at * bytes, size_t(count * bytes));
}

// ---- batch layout (common.cuh) ---------------------------------------------------

// The sequence whose query rows [qo_indptr[s], qo_indptr[s+1]) hold row t: the
// largest s with qo_indptr[s] <= t, which skips sequences with no rows.
int findSeq(const int32_t *qo_indptr, int num_seqs, int t) {
  int s = 0;
  while (s + 1 < num_seqs && qo_indptr[s + 1] <= t) ++s;
  return s;
}

// KV positions sequence s holds in the cache.
int seqKvLen(const int32_t *kv_indptr, const int32_t *kv_last_page_len, int s, int page_size) {
  const int pages = kv_indptr[s + 1] - kv_indptr[s];
  return pages > 0 ? (pages - 1) * page_size + kv_last_page_len[s] : 0;
}

// Element offset of (KV position p, kv head, dim 0) of sequence s in a cache
// laid out [num_pages][page_size][num_kv_heads][head_dim].
int64_t kvOffset(const HeadShape &h, const int32_t *kv_indptr, const int32_t *kv_page_indices,
                 int s, int p, int kv_head) {
  const int64_t page = kv_page_indices[kv_indptr[s] + p / h.page_size];
  return ((page * h.page_size + p % h.page_size) * h.num_kv_heads + kv_head) * h.head_dim;
}

// The kernels' static_asserts.
void checkHeads(const HeadShape &h, bool rope) {
  if (h.num_heads <= 0 || h.num_kv_heads <= 0 || h.head_dim <= 0 || h.page_size <= 0 ||
      h.num_heads % h.num_kv_heads != 0)
    throw std::invalid_argument("bad head shape: " + std::to_string(h.num_heads) + " heads, " +
                                std::to_string(h.num_kv_heads) + " kv heads, head_dim " +
                                std::to_string(h.head_dim) + ", page size " +
                                std::to_string(h.page_size));
  if (rope && (h.rotary_dim <= 0 || h.rotary_dim % 2 != 0 || h.rotary_dim > h.head_dim))
    throw std::invalid_argument("rotary_dim " + std::to_string(h.rotary_dim) +
                                " must be even and in (0, head_dim]");
}

// ---- helpers of the ops ------------------------------------------------------------

// HF RMSNorm of one row given in fp32 (h), written at element offset `at` of out:
//   out = T(float(w) * float(T(h * rsqrt(mean(h^2) + eps)))).
void normalizeRow(ElementType t, const std::vector<float> &h, const void *weight, void *out,
                  int64_t at, float eps) {
  float sum_sq = 0.f;
  for (float v : h) sum_sq += v * v;
  const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(h.size()) + eps);
  for (size_t i = 0; i < h.size(); ++i) {
    const float n = roundTo(t, h[i] * inv_rms);
    storeElement(t, out, at + int64_t(i), loadElement(t, weight, int64_t(i)) * n);
  }
}

// Rotary embedding of one head (HF rotate_half: pairs (i, i + rotary_dim / 2))
// from src at element offset x to dst at element offset y; c and s are the
// token's cos/sin, already rounded to t. Dims >= rotary_dim pass through.
void ropeHead(ElementType t, const HeadShape &h, const void *src, int64_t x,
              const std::vector<float> &c, const std::vector<float> &s, void *dst, int64_t y) {
  const int half = h.rotary_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float x1 = loadElement(t, src, x + i);
    const float x2 = loadElement(t, src, x + i + half);
    storeElement(t, dst, y + i, roundTo(t, x1 * c[i]) - roundTo(t, x2 * s[i]));
    storeElement(t, dst, y + i + half, roundTo(t, x2 * c[i]) + roundTo(t, x1 * s[i]));
  }
  copyElements(t, src, x + h.rotary_dim, dst, y + h.rotary_dim, h.head_dim - h.rotary_dim);
}

} // namespace

// ---- kernels -----------------------------------------------------------------------

void embedding(ElementType t, int hidden, const int32_t *token_ids, const void *table, void *out,
               int num_tokens) {
  for (int i = 0; i < num_tokens; ++i)
    copyElements(t, table, int64_t(token_ids[i]) * hidden, out, int64_t(i) * hidden, hidden);
}

void rmsNorm(ElementType t, int hidden, const void *x, const void *weight, void *out, float eps,
             int num_rows) {
  std::vector<float> h(hidden);
  for (int r = 0; r < num_rows; ++r) {
    const int64_t at = int64_t(r) * hidden;
    for (int i = 0; i < hidden; ++i) h[i] = loadElement(t, x, at + i);
    normalizeRow(t, h, weight, out, at, eps);
  }
}

void addRmsNorm(ElementType t, int hidden, const void *a, const void *b, const void *weight,
                void *sum_out, void *norm_out, float eps, int num_rows) {
  std::vector<float> sum(hidden);
  for (int r = 0; r < num_rows; ++r) {
    const int64_t at = int64_t(r) * hidden;
    for (int i = 0; i < hidden; ++i)
      sum[i] = roundTo(t, loadElement(t, a, at + i) + loadElement(t, b, at + i));
    for (int i = 0; i < hidden; ++i) storeElement(t, sum_out, at + i, sum[i]); // exact
    normalizeRow(t, sum, weight, norm_out, at, eps);
  }
}

void ropeKvWrite(ElementType t, const HeadShape &s, const void *qkv, const int32_t *positions,
                 const int32_t *qo_indptr, const int32_t *kv_indptr, const int32_t *kv_page_indices,
                 const float *inv_freq, void *q_out, void *k_cache, void *v_cache, int num_tokens,
                 int num_seqs) {
  checkHeads(s, /*rope=*/true);
  const int64_t d = s.head_dim;
  const int64_t q_width = s.num_heads * d;
  const int64_t qkv_width = (s.num_heads + 2 * s.num_kv_heads) * d;
  const int half = s.rotary_dim / 2;
  std::vector<float> cos_t(half), sin_t(half);
  for (int tok = 0; tok < num_tokens; ++tok) {
    const int pos = positions[tok];
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq[i]; // fp32, like HF
      cos_t[i] = roundTo(t, std::cos(angle));
      sin_t[i] = roundTo(t, std::sin(angle));
    }
    const int seq = findSeq(qo_indptr, num_seqs, tok);
    const int64_t kv_at = kvOffset(s, kv_indptr, kv_page_indices, seq, pos, 0);
    const int64_t row = tok * qkv_width;
    for (int h = 0; h < s.num_heads; ++h)
      ropeHead(t, s, qkv, row + h * d, cos_t, sin_t, q_out, tok * q_width + h * d);
    for (int h = 0; h < s.num_kv_heads; ++h)
      ropeHead(t, s, qkv, row + (s.num_heads + h) * d, cos_t, sin_t, k_cache, kv_at + h * d);
    // [kv head][dim] is contiguous in both the qkv row and one cache slot.
    copyElements(t, qkv, row + (s.num_heads + s.num_kv_heads) * d, v_cache, kv_at,
                 s.num_kv_heads * d);
  }
}

void pagedAttention(ElementType t, const HeadShape &s, const void *q, const void *k_cache,
                    const void *v_cache, const int32_t *positions, const int32_t *qo_indptr,
                    const int32_t *kv_indptr, const int32_t *kv_page_indices,
                    const int32_t *kv_last_page_len, void *out, float scale, int sliding_window,
                    int num_tokens, int num_seqs) {
  checkHeads(s, /*rope=*/false);
  const int group = s.num_heads / s.num_kv_heads;
  const int64_t d = s.head_dim;
  std::vector<float> logits;
  std::vector<float> acc(d);
  for (int tok = 0; tok < num_tokens; ++tok) {
    const int seq = findSeq(qo_indptr, num_seqs, tok);
    const int pos = positions[tok];
    const int kv_len = seqKvLen(kv_indptr, kv_last_page_len, seq, s.page_size);
    const int lo = sliding_window > 0 ? std::max(0, pos - sliding_window + 1) : 0;
    const int hi = std::min(pos, kv_len - 1); // keys j in [lo, hi]
    for (int h = 0; h < s.num_heads; ++h) {
      const int kv_head = h / group;
      const int64_t q_at = (int64_t(tok) * s.num_heads + h) * d; // also the output's offset
      // logit_j = scale * dot(q, k_j); the softmax subtracts their maximum.
      logits.clear();
      float max_logit = -std::numeric_limits<float>::infinity();
      for (int j = lo; j <= hi; ++j) {
        const int64_t k_at = kvOffset(s, kv_indptr, kv_page_indices, seq, j, kv_head);
        float dot = 0.f;
        for (int64_t i = 0; i < d; ++i)
          dot += loadElement(t, q, q_at + i) * loadElement(t, k_cache, k_at + i);
        logits.push_back(scale * dot);
        max_logit = std::fmax(max_logit, logits.back());
      }
      // out = sum_j p_j v_j / sum_j p_j with p_j = exp(logit_j - max).
      float denom = 0.f;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int j = lo; j <= hi; ++j) {
        const float p = std::exp(logits[j - lo] - max_logit);
        denom += p;
        const int64_t v_at = kvOffset(s, kv_indptr, kv_page_indices, seq, j, kv_head);
        for (int64_t i = 0; i < d; ++i) acc[i] += p * loadElement(t, v_cache, v_at + i);
      }
      for (int64_t i = 0; i < d; ++i) // no key (hi < lo): zeros
        storeElement(t, out, q_at + i, denom > 0.f ? acc[i] / denom : 0.f);
    }
  }
}

void siluMul(ElementType t, int intermediate, const void *gate_up, void *out, int num_tokens) {
  for (int tok = 0; tok < num_tokens; ++tok) {
    const int64_t gate_at = int64_t(tok) * 2 * intermediate;
    const int64_t up_at = gate_at + intermediate;
    const int64_t out_at = int64_t(tok) * intermediate;
    for (int i = 0; i < intermediate; ++i) {
      const float g = loadElement(t, gate_up, gate_at + i);
      const float act = roundTo(t, g / (1.0f + std::exp(-g)));
      storeElement(t, out, out_at + i, act * loadElement(t, gate_up, up_at + i));
    }
  }
}

void gatherRows(ElementType t, int hidden, const void *x, const int32_t *rows, void *out,
                int num_rows) {
  for (int i = 0; i < num_rows; ++i)
    copyElements(t, x, int64_t(rows[i]) * hidden, out, int64_t(i) * hidden, hidden);
}

// ---- gemm --------------------------------------------------------------------------

namespace {

// A 256 x 32 fp32 tile of w is 32 KiB (L1-sized); 32 rows of w are read at a
// time, few enough streams for the hardware prefetcher.
constexpr int64_t kGemmTileN = 32;  // columns of c (rows of w) per tile
constexpr int64_t kGemmTileK = 256; // k per step

struct GemmProblem {
  ElementType in, out;
  int64_t m, n, k;
  const void *a, *w, *bias;
  void *c;
};

// Columns [n_begin, n_end) of c, kGemmTileN at a time. Each tile of w is
// converted to fp32 once, transposed ([k][column]) so that the innermost loop
// runs over columns: independent sums, which the compiler can vectorise
// without reordering any of them. Every c element is summed in k order.
void gemmColumns(const GemmProblem &p, int64_t n_begin, int64_t n_end) {
  std::vector<float> w_tile(kGemmTileK * kGemmTileN); // [kk][j]
  std::vector<float> row(kGemmTileK);                 // one converted row piece of a or w
  std::vector<float> acc;                             // [i][j]
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kGemmTileN) {
    const int64_t tn = std::min(kGemmTileN, n_end - n0);
    acc.assign(p.m * tn, 0.f);
    for (int64_t k0 = 0; k0 < p.k; k0 += kGemmTileK) {
      const int64_t tk = std::min(kGemmTileK, p.k - k0);
      for (int64_t j = 0; j < tn; ++j) {
        loadElements(p.in, p.w, (n0 + j) * p.k + k0, tk, row.data());
        for (int64_t kk = 0; kk < tk; ++kk) w_tile[kk * tn + j] = row[kk];
      }
      for (int64_t i = 0; i < p.m; ++i) {
        loadElements(p.in, p.a, i * p.k + k0, tk, row.data());
        float *acc_row = &acc[i * tn];
        for (int64_t kk = 0; kk < tk; ++kk) {
          const float x = row[kk];
          const float *w_row = &w_tile[kk * tn];
          for (int64_t j = 0; j < tn; ++j) acc_row[j] += x * w_row[j];
        }
      }
    }
    for (int64_t i = 0; i < p.m; ++i) {
      for (int64_t j = 0; j < tn; ++j) {
        float v = acc[i * tn + j];
        if (p.bias) v += loadElement(p.in, p.bias, n0 + j);
        storeElement(p.out, p.c, i * p.n + n0 + j, v); // the one rounding
      }
    }
  }
}

} // namespace

void gemm(ElementType in, ElementType out, int64_t m, int64_t n, int64_t k, const void *a,
          const void *w, const void *bias, void *c, int num_threads) {
  if (out != ElementType::f32 && out != in)
    throw std::invalid_argument("gemm: the output type must be f32 or the input type");
  if (m < 0 || n < 0 || k < 0) throw std::invalid_argument("gemm: negative size");
  const GemmProblem p{in, out, m, n, k, a, w, bias, c};

  // Whole column tiles per thread: thread i takes tiles [i * T / N, (i + 1) * T / N).
  // Automatic: one thread per hardware thread, each with at least ~1M multiply-adds.
  const int64_t tiles = ceilDiv(n, kGemmTileN);
  int64_t threads = num_threads;
  if (threads <= 0)
    threads = std::min<int64_t>(std::thread::hardware_concurrency(), m * n * k >> 20);
  threads = std::clamp<int64_t>(threads, 1, std::max<int64_t>(tiles, 1));
  auto columns = [&](int64_t i) {
    const int64_t begin = i * tiles / threads * kGemmTileN;
    const int64_t end = std::min(n, (i + 1) * tiles / threads * kGemmTileN);
    gemmColumns(p, begin, end);
  };
  std::vector<std::jthread> workers;
  for (int64_t i = 1; i < threads; ++i) workers.emplace_back(columns, i);
  columns(0);
} // the jthreads join here

} // namespace llmc::cpu
