// sample_rows: the steps of runtime/sample/Sampler.h on the device, one block
// of 1024 threads per row of logits. Compiled by NVRTC after
// runtime/sample/RowSampling.h (the structs it reads and writes).
//
// Each step is one or more passes over the row (it stays in L2 between
// passes); sums are in double, as on the host. The weights that choose a
// token are fp64 exps, as on the host; the log-sum-exp behind the reported
// logprobs adds fp32 exps (within about 1e-7 of the host's logprobs): with
// fp64 exps that pass made a greedy row of a 128k vocabulary take 67 us
// instead of 47 on an H200. A filter's cut and the sampled
// token are found by the host's radix descent (selectInOrder in Sampler.cpp):
// per level a histogram of the weight of each bucket of rank bits (shared
// memory, atomics), then a block-wide scan finds the bucket where the
// cumulative weight gets to the target. The atomics add in no fixed order, so
// a sum may differ from the host's in its last bits: a token differs only if
// a target falls within that rounding of a token boundary.

using llmc::sample::LogitAdjustment;
using llmc::sample::RowSample;
using llmc::sample::RowSampling;

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxBuckets = 1 << 12;  // the first level's 12 bits

__device__ __forceinline__ float plus_inf() { return __int_as_float(0x7f800000); }

// A logit's place in the order (Sampler.cpp's rank): larger logits get
// smaller ranks, -0 ranks as +0.
__device__ __forceinline__ unsigned rank_of(float x) {
  const unsigned bits = __float_as_uint(x == 0.0f ? 0.0f : x);
  return ~((bits & 0x80000000u) ? ~bits : bits | 0x80000000u);
}

__device__ __forceinline__ unsigned long long key_of(unsigned rank, int token) {
  return (unsigned long long)rank << 32 | unsigned(token);
}

// The row after step 1: NaN is -inf, and when the row holds +inf only the
// +inf tokens stay (as 0), everything else is -inf.
struct MaskedRow {
  const float *logits;
  int cols;
  bool plus_inf_row;
  __device__ float mask(float v) const {
    if (v != v) return -plus_inf();
    if (plus_inf_row) return v == plus_inf() ? 0.0f : -plus_inf();
    return v;
  }
  __device__ float operator()(int i) const { return mask(logits[i]); }

  // Calls f(i, x) for every token i of the row, x its masked logit, with
  // several loads in flight per thread (a pass is bound by the latency of
  // L2 otherwise). Every thread makes the same number of calls (so f may
  // hold warp-collective code): past the row's end with i = -1.
  template <class F>
  __device__ void for_each(F f) const {
    constexpr int kLoads = 8;
    for (int base = 0; base < cols; base += kThreads * kLoads) {
      float v[kLoads];
#pragma unroll
      for (int k = 0; k < kLoads; ++k) {
        const int i = base + k * kThreads + int(threadIdx.x);
        v[k] = i < cols ? logits[i] : 0.0f;
      }
#pragma unroll
      for (int k = 0; k < kLoads; ++k) {
        const int i = base + k * kThreads + int(threadIdx.x);
        f(i < cols ? i : -1, mask(v[k]));
      }
    }
  }
};

// Every thread gets op over every thread's value.
template <class T, class Op>
__device__ T block_all_reduce(T value, Op op) {
  __shared__ T partial[kWarps];
  for (int offset = 16; offset > 0; offset /= 2)
    value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  __syncthreads();  // partial may still be read by a previous call
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = value;
  __syncthreads();
  value = partial[threadIdx.x % 32];
  for (int offset = 16; offset > 0; offset /= 2)
    value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

// The sum of every thread's values before this thread's (in thread order).
__device__ double block_exclusive_sum(double value) {
  __shared__ double warp_totals[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  double inclusive = value;
  for (int offset = 1; offset < 32; offset *= 2) {
    const double other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  __syncthreads();
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  double before = inclusive - value;
  for (int w = 0; w < warp; ++w) before += warp_totals[w];
  return before;
}

struct Descent {
  double mass[kMaxBuckets];
  int count[16];  // the last level's buckets: tokens of positive weight
  int first[16];  // ... and the lowest of their ids
  int found, last, token;
  double before;
};

// Sampler.cpp's selectInOrder: the first token in the order whose cumulative
// weight exceeds `target` (reaches it if inclusive) among the tokens of
// positive weight; the last of those if rounding leaves the target beyond the
// total. weight(i, x, rank) is 0 or positive, and positive for some token.
// With of_total, the target is that fraction of the total weight, which the
// first level's histogram sums (no pass of its own).
template <class Weight>
__device__ int select_in_order(const MaskedRow &row, Weight weight, double target, bool of_total,
                               bool inclusive, Descent &d) {
  constexpr int kShift[] = {20, 12, 4, 0}, kBits[] = {12, 8, 8, 4};
  unsigned prefix = 0, prefix_mask = 0;
  for (int level = 0; level < 4; ++level) {
    const int shift = kShift[level], buckets = 1 << kBits[level];
    const bool last_level = level == 3;
    for (int b = threadIdx.x; b < buckets; b += kThreads) d.mass[b] = 0;
    if (last_level && threadIdx.x < 16) {
      d.count[threadIdx.x] = 0;
      d.first[threadIdx.x] = row.cols;
    }
    if (threadIdx.x == 0) {
      d.found = buckets;
      d.last = -1;
    }
    __syncthreads();
    // Lanes of a warp that hit the same bucket add up first (shuffles in
    // lane order), so a narrow row (most tokens in a few buckets) costs one
    // shared-memory atomic per warp and bucket, not one per token.
    row.for_each([&](int i, float x) {
      int b = -1;
      double w = 0;
      if (i >= 0) {
        const unsigned rank = rank_of(x);
        if ((rank & prefix_mask) == prefix) {
          w = weight(i, x, rank);
          if (w > 0) b = int(rank >> shift) & (buckets - 1);
        }
      }
      const unsigned group = __match_any_sync(0xffffffffu, b);
      if (b < 0) return;
      double sum = 0;
      for (unsigned lanes = group; lanes; lanes &= lanes - 1)
        sum += __shfl_sync(group, w, __ffs(lanes) - 1);
      const int leader = __ffs(group) - 1;
      if (int(threadIdx.x % 32) == leader) {
        atomicAdd(&d.mass[b], sum);
        if (last_level) {
          atomicAdd(&d.count[b], __popc(group));
          atomicMin(&d.first[b], i);  // the leader holds the group's lowest id
        }
      }
    });
    __syncthreads();

    // The bucket: the first non-empty one where the cumulative weight gets
    // to the target, else the last non-empty one. Each thread owns `per`
    // consecutive buckets.
    const int per = buckets > kThreads ? buckets / kThreads : 1;
    const int begin = threadIdx.x * per;
    double own = 0;
    for (int j = 0; j < per && begin + j < buckets; ++j) own += d.mass[begin + j];
    if (level == 0 && of_total) target *= block_all_reduce(own, [](double a, double b) { return a + b; });
    const double before = block_exclusive_sum(own);
    double cumulative = before;
    int found = buckets, last = -1;
    for (int j = 0; j < per && begin + j < buckets; ++j) {
      const double m = d.mass[begin + j];
      if (m != 0) {
        last = begin + j;
        const double reached = cumulative + m;
        if (found == buckets && (inclusive ? reached >= target : reached > target)) found = begin + j;
      }
      cumulative += m;
    }
    if (found < buckets) atomicMin(&d.found, found);
    if (last >= 0) atomicMax(&d.last, last);
    __syncthreads();
    const int chosen = min(d.found, d.last);
    if (chosen >= begin && chosen < begin + per) {
      double at = before;
      for (int j = begin; j < chosen; ++j) at += d.mass[j];
      d.before = at;
    }
    __syncthreads();
    target -= d.before;
    prefix |= unsigned(chosen) << shift;
    prefix_mask |= unsigned(buckets - 1) << shift;
    if (last_level) {
      // The tokens left share one logit, hence one weight: walk them in id
      // order. One thread counts how many come before the chosen one; the
      // block then finds it, 1024 ids at a time. Nearly always there is just
      // one.
      if (threadIdx.x == 0) {
        const int tied = d.count[chosen];
        const int lowest = d.first[chosen];
        const double w = weight(lowest, row(lowest), prefix);
        int skip = 0;
        while (skip + 1 < tied && !(inclusive ? w >= target : w > target)) {
          target -= w;
          ++skip;
        }
        d.token = skip == 0 ? lowest : -(skip + 1);  // negative: the (skip+1)-th tied token
      }
      __syncthreads();
      if (d.token < 0) {
        __shared__ int warp_counts[kWarps];
        int remaining = -d.token;  // ordinal (1-based) among the tied tokens
        for (int base = d.first[chosen]; base < row.cols; base += kThreads) {
          const int i = base + int(threadIdx.x);
          bool tied = false;
          if (i < row.cols) {
            const float x = row(i);
            const unsigned rank = rank_of(x);
            tied = rank == prefix && weight(i, x, rank) > 0;
          }
          const int n = __syncthreads_count(tied);
          if (n < remaining) {
            remaining -= n;
            continue;
          }
          const unsigned ballot = __ballot_sync(0xffffffffu, tied);
          const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32);
          if (lane == 0) warp_counts[warp] = __popc(ballot);
          __syncthreads();
          int before = __popc(ballot & ((1u << lane) - 1));
          for (int w = 0; w < warp; ++w) before += warp_counts[w];
          if (tied && before + 1 == remaining) d.token = i;
          break;
        }
      }
      __syncthreads();
    }
  }
  const int token = d.token;
  __syncthreads();  // d is reused by the next descent
  return token;
}

} // namespace

extern "C" __global__ void __launch_bounds__(kThreads)
sample_rows(float *logits, long long cols, const RowSampling *params,
            const LogitAdjustment *adjustments, RowSample *out) {
  __shared__ Descent d;
  __shared__ unsigned long long top_keys[llmc::sample::kMaxTopLogprobs];
  __shared__ int num_top;
  const RowSampling p = params[blockIdx.x];
  float *raw = logits + blockIdx.x * cols;
  RowSample &result = out[blockIdx.x];
  const int V = int(cols);

  // 0. Penalties and bans: one adjustment per token, so no two threads write
  // the same logit.
  for (int j = threadIdx.x; j < p.num_adjustments; j += kThreads) {
    const LogitAdjustment a = adjustments[p.first_adjustment + j];
    if (a.token < 0 || a.token >= V) continue;
    const float v = raw[a.token];
    raw[a.token] = (v > 0 ? v / a.repetition : v * a.repetition) - a.subtract;
  }
  __syncthreads();

  // 1. Masking, and the greedy token: the smallest key (rank, then id).
  MaskedRow row{raw, V, false};
  unsigned long long best = ~0ull;
  row.for_each([&](int i, float x) {
    const unsigned long long key = key_of(rank_of(x), i);
    if (i >= 0 && key < best) best = key;
  });
  best = block_all_reduce(best, [](unsigned long long a, unsigned long long b) { return a < b ? a : b; });
  const int greedy = int(best & 0xffffffffu);
  float m = row(greedy);
  if (m == -plus_inf()) {  // nothing can be sampled
    if (threadIdx.x == 0) {
      result.token = -1;
      result.logprob = -plus_inf();
      result.num_top = 0;
    }
    return;
  }
  if (m == plus_inf()) {
    row.plus_inf_row = true;
    m = 0;
  }

  // 2. Raw logprobs.
  double sum = 0;
  row.for_each([&](int i, float x) {
    if (i >= 0) sum += expf(x - m);
  });
  sum = block_all_reduce(sum, [](double a, double b) { return a + b; });
  const double lse = m + log(sum);
  auto logprob = [&](int token) { return float(double(row(token)) - lse); };

  if (threadIdx.x == 0) num_top = 0;
  if (p.logprobs > 0) {
    // The n-th token of the order among the finite ones; every finite token
    // up to it in the order, sorted by one thread (n <= 20).
    const int n = min(p.logprobs, llmc::sample::kMaxTopLogprobs);
    auto finite = [](int, float x, unsigned) { return x != -plus_inf() ? 1.0 : 0.0; };
    const int nth = select_in_order(row, finite, double(n), false, true, d);
    const unsigned long long cut = key_of(rank_of(row(nth)), nth);
    row.for_each([&](int i, float x) {
      if (i >= 0 && x != -plus_inf() && key_of(rank_of(x), i) <= cut)
        top_keys[atomicAdd(&num_top, 1)] = key_of(rank_of(x), i);
    });
    __syncthreads();
    if (threadIdx.x == 0)
      for (int a = 1; a < num_top; ++a)
        for (int b = a; b > 0 && top_keys[b] < top_keys[b - 1]; --b) {
          const unsigned long long t = top_keys[b];
          top_keys[b] = top_keys[b - 1];
          top_keys[b - 1] = t;
        }
  }

  int token = greedy;  // 3. Greedy.
  if (p.temperature != 0) {
    // 4. Weights and filters: each keeps the tokens up to a cut in the order
    // (top-k, top-p), or of weight >= min_p.
    const double T = p.temperature;
    unsigned long long cut = ~0ull;
    bool min_p = false;
    auto kept_weight = [&](int i, float x, unsigned rank) {
      if (key_of(rank, i) > cut) return 0.0;  // before the exp: most tokens, after top-k
      const double w = exp((double(x) - m) / T);
      return min_p && w < p.min_p ? 0.0 : w;
    };
    auto kept_count = [&](int i, float x, unsigned rank) { return kept_weight(i, x, rank) > 0 ? 1.0 : 0.0; };
    auto key_at = [&](int i) { return key_of(rank_of(row(i)), i); };
    if (p.top_k > 0) cut = key_at(select_in_order(row, kept_count, double(p.top_k), false, true, d));
    if (p.top_p < 1) cut = key_at(select_in_order(row, kept_weight, p.top_p, true, true, d));
    min_p = p.min_p > 0;
    // 5. Inverse CDF.
    token = select_in_order(row, kept_weight, p.u, true, false, d);
  }

  if (threadIdx.x == 0) {
    result.token = token;
    result.logprob = logprob(token);
    result.num_top = num_top;
    for (int k = 0; k < num_top; ++k) {
      const int id = int(top_keys[k] & 0xffffffffu);
      result.top_tokens[k] = id;
      result.top_logprobs[k] = logprob(id);
    }
  }
}
