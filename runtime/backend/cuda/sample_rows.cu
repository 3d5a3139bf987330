// sample_rows: the steps of runtime/sample/Sampler.h on the device. Compiled
// by NVRTC after kernels/common.cuh, SampleShape.h and
// runtime/sample/RowSampling.h (the structs it reads and writes).
//
// A row is served by one block or, when there are few rows, by a cluster of
// up to 8 blocks (sm_90) that split its tokens: each block walks its own
// slice, and the blocks combine what they found (maxima, sums, histograms)
// through distributed shared memory in rank order, so every block holds the
// same row-wide results and takes the same steps; block 0 writes the row's
// result. A pass is a chain of warp-collective steps a logit, so one
// multiprocessor alone takes 0.1-1 ms for a row of a 128k vocabulary.
//
// Each step is one or more passes over the row (it stays in L2 between
// passes); sums are in double, as on the host. The weights that choose a
// token are fp64 exps, as on the host; the log-sum-exp behind the reported
// logprobs adds fp32 exps in the greedy pass (within about 1e-7 of the
// host's logprobs). A filter's cut and the sampled
// token are found by the host's radix descent (selectInOrder in Sampler.cpp):
// per level a histogram of the weight of each bucket of rank bits (shared
// memory, atomics), then a block-wide scan finds the bucket where the
// cumulative weight gets to the target. Only the first level reads the whole
// row: the tokens of its chosen bucket are then copied to a list in shared
// memory, which the later levels read instead (a bucket too full for the list,
// as in a row of near-equal logits, leaves them reading the row). The atomics
// add in no fixed order, so a sum may differ from the host's in its last bits:
// a token differs only if a target falls within that rounding of a token
// boundary.

using llmc::sample::LogitAdjustment;
using llmc::sample::RowSample;
using llmc::sample::RowSampling;
using namespace llmc::sample_rows;

namespace {

constexpr int kWarps = kThreads / 32;

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

// The blocks that serve one row: a cluster, or one block.
struct RowBlocks {
  unsigned size, rank;
  __device__ void sync() const {
    if (size > 1) {
      llmc_kernels::cluster_sync();
    } else {
      __syncthreads();
    }
  }
  // Block r's copy of the shared variable at p.
  template <class T>
  __device__ const T *at(const T *p, unsigned r) const {
    return size > 1 ? llmc_kernels::map_rank(p, r) : p;
  }
};

// The row after step 1: NaN is -inf, and when the row holds +inf only the
// +inf tokens stay (as 0), everything else is -inf. for_each walks this
// block's slice [lo, hi) of the row; operator() reads any token.
struct MaskedRow {
  const float *logits;
  int cols;
  int lo, hi;
  bool plus_inf_row;
  __device__ float mask(float v) const {
    if (v != v) return -plus_inf();
    if (plus_inf_row) return v == plus_inf() ? 0.0f : -plus_inf();
    return v;
  }
  __device__ float operator()(int i) const { return mask(logits[i]); }

  // Calls f(i, x) for every token i of the block's slice, x its masked
  // logit, with several loads in flight per thread (a pass is bound by the
  // latency of L2 otherwise). Every thread of the block makes the same
  // number of calls (so f may hold warp-collective code): past the slice's
  // end with i = -1.
  template <class F>
  __device__ void for_each(F f) const {
    constexpr int kLoads = 8;
    for (int base = lo; base < hi; base += kThreads * kLoads) {
      float v[kLoads];
#pragma unroll
      for (int k = 0; k < kLoads; ++k) {
        const int i = base + k * kThreads + int(threadIdx.x);
        v[k] = i < hi ? logits[i] : 0.0f;
      }
#pragma unroll
      for (int k = 0; k < kLoads; ++k) {
        const int i = base + k * kThreads + int(threadIdx.x);
        f(i < hi ? i : -1, mask(v[k]));
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

// Every thread of the row's blocks gets op over all of their values; the
// blocks' values are combined in rank order, so all get the same result.
template <class T, class Op>
__device__ T row_all_reduce(T value, Op op, const RowBlocks &blocks) {
  value = block_all_reduce(value, op);
  if (blocks.size == 1) return value;
  __shared__ T block_value;
  if (threadIdx.x == 0) block_value = value;
  blocks.sync();
  value = *blocks.at(&block_value, 0);
  for (unsigned r = 1; r < blocks.size; ++r) value = op(value, *blocks.at(&block_value, r));
  blocks.sync();  // block_value is written again by the next call
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

// A token of the list that later levels of a descent read: its id and
// masked logit.
struct Listed {
  int id;
  float x;
};

// Levels after the first have at most this many buckets, so the rest of the
// row's first-level histogram holds the list.
constexpr int kLaterBuckets = 1 << 8;
constexpr int kListCapacity = int((kFirstLevelBuckets - kLaterBuckets) * sizeof(double) / sizeof(Listed));

// A level's histograms in dynamic shared memory (sharedBytes()): this block's
// own (which the row's other blocks read) and the row's, their sum in rank
// order (the block's own when it serves the row alone). After the first
// level the row's holds kLaterBuckets buckets, then this block's list.
// (The histograms are indexed from the array itself, not through pointers:
// their atomics then compile as shared-memory ones, 4% faster at 256 rows.)
extern __shared__ double histograms[];
struct Histograms {
  int row_offset;  // 0 (alone) or kFirstLevelBuckets
  __device__ double &own(int b) const { return histograms[b]; }
  __device__ double &row(int b) const { return histograms[row_offset + b]; }
  __device__ Listed *list() const { return reinterpret_cast<Listed *>(histograms + row_offset + kLaterBuckets); }
};

struct Descent {
  int count[16];  // the last level's buckets, this block's tokens: tokens of positive weight
  int first[16];  // ... and the lowest of their ids
  int found, last, token, listed;
  int lowest;  // the lowest id among the row's tokens of the chosen last-level bucket
  double before;
};

// The tokens of a descent's list as MaskedRow::for_each walks the row: f(i,
// x) the same number of times in every thread, i = -1 past the end.
struct ListedTokens {
  const Listed *list;
  int n;
  template <class F>
  __device__ void for_each(F f) const {
    for (int base = 0; base < n; base += kThreads) {
      const int j = base + int(threadIdx.x);
      const Listed e = j < n ? list[j] : Listed{-1, 0.0f};
      f(e.id, e.x);
    }
  }
};

// Copies the tokens of this block's slice whose rank starts with `prefix`
// (under prefix_mask) to the list; d.listed is their number, which may exceed the
// list's capacity (the tokens past it are not copied).
__device__ void list_tokens(const MaskedRow &row, unsigned prefix, unsigned prefix_mask,
                            const Histograms &h, Descent &d) {
  if (threadIdx.x == 0) d.listed = 0;
  __syncthreads();
  Listed *list = h.list();
  row.for_each([&](int i, float x) {
    const bool in = i >= 0 && (rank_of(x) & prefix_mask) == prefix;
    const unsigned ballot = __ballot_sync(0xffffffffu, in);
    if (ballot == 0) return;
    const int lane = int(threadIdx.x % 32), leader = __ffs(ballot) - 1;
    int at = 0;
    if (lane == leader) at = atomicAdd(&d.listed, __popc(ballot));
    at = __shfl_sync(0xffffffffu, at, leader) + __popc(ballot & ((1u << lane) - 1));
    if (in && at < kListCapacity) list[at] = Listed{i, x};
  });
  __syncthreads();
}

// Sampler.cpp's selectInOrder: the first token in the order whose cumulative
// weight exceeds `target` (reaches it if inclusive) among the tokens of
// positive weight; the last of those if rounding leaves the target beyond the
// total. weight(i, x, rank) is 0 or positive, and positive for some token.
// With of_total, the target is that fraction of the total weight, which the
// first level's histogram sums (no pass of its own).
template <class Weight>
__device__ int select_in_order(const MaskedRow &row, Weight weight, double target, bool of_total,
                               bool inclusive, Descent &d, const Histograms &h,
                               const RowBlocks &blocks) {
  constexpr int kShift[] = {20, 12, 4, 0}, kBits[] = {12, 8, 8, 4};
  static_assert(kBits[1] <= 8 && kBits[2] <= 8 && kBits[3] <= 8, "later levels fit kLaterBuckets");
  unsigned prefix = 0, prefix_mask = 0;
  bool listed = false;  // levels read the list rather than the block's slice
  for (int level = 0; level < 4; ++level) {
    const int shift = kShift[level], buckets = 1 << kBits[level];
    const bool last_level = level == 3;
    for (int b = threadIdx.x; b < buckets; b += kThreads) h.own(b) = 0;
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
    auto add_to_histogram = [&](int i, float x) {
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
      // The group's lowest id (a list is not in id order). sm_80, like the
      // runtime's GEMV.
      const int lowest = last_level ? int(__reduce_min_sync(group, unsigned(i))) : 0;
      if (int(threadIdx.x % 32) == __ffs(group) - 1) {
        atomicAdd(&h.own(b), sum);
        if (last_level) {
          atomicAdd(&d.count[b], __popc(group));
          atomicMin(&d.first[b], lowest);
        }
      }
    };
    if (listed) {
      ListedTokens{h.list(), d.listed}.for_each(add_to_histogram);
    } else {
      row.for_each(add_to_histogram);
    }
    __syncthreads();
    // The row's histogram; every block of the row adds the same numbers in
    // the same order, so all choose the same bucket.
    if (blocks.size > 1) {
      blocks.sync();
      for (int b = threadIdx.x; b < buckets; b += kThreads) {
        double sum = 0;
        for (unsigned r = 0; r < blocks.size; ++r) sum += *blocks.at(&h.own(b), r);
        h.row(b) = sum;
      }
      blocks.sync();  // the other blocks are done reading this block's own
    }

    // The bucket: the first non-empty one where the cumulative weight gets
    // to the target, else the last non-empty one. Each thread owns `per`
    // consecutive buckets.
    const int per = buckets > kThreads ? buckets / kThreads : 1;
    const int begin = threadIdx.x * per;
    double own = 0;
    for (int j = 0; j < per && begin + j < buckets; ++j) own += h.row(begin + j);
    if (level == 0 && of_total) target *= block_all_reduce(own, [](double a, double b) { return a + b; });
    const double before = block_exclusive_sum(own);
    double cumulative = before;
    int found = buckets, last = -1;
    for (int j = 0; j < per && begin + j < buckets; ++j) {
      const double m = h.row(begin + j);
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
      for (int j = begin; j < chosen; ++j) at += h.row(j);
      d.before = at;
    }
    __syncthreads();
    target -= d.before;
    prefix |= unsigned(chosen) << shift;
    prefix_mask |= unsigned(buckets - 1) << shift;
    if (level == 0) {
      list_tokens(row, prefix, prefix_mask, h, d);
      listed = d.listed <= kListCapacity;
    }
    if (last_level) {
      // The tokens left share one logit, hence one weight: walk them in id
      // order. One thread counts how many come before the chosen one; the
      // block then finds it, 1024 ids at a time, over the whole row (each
      // block of the row alike). Nearly always there is just one.
      if (threadIdx.x == 0) {
        int tied = 0, lowest = row.cols;
        for (unsigned r = 0; r < blocks.size; ++r) {
          tied += *blocks.at(&d.count[chosen], r);
          lowest = min(lowest, *blocks.at(&d.first[chosen], r));
        }
        d.lowest = lowest;
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
        for (int base = d.lowest; base < row.cols; base += kThreads) {
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

// A grid of rows x B blocks, in clusters of B along x (B = 1: no cluster),
// sharedBytes(B) of dynamic shared memory each.
extern "C" __global__ void __launch_bounds__(kThreads)
sample_rows(float *logits, long long cols, const RowSampling *params,
            const LogitAdjustment *adjustments, RowSample *out) {
  __shared__ Descent d;
  __shared__ unsigned long long top_keys[llmc::sample::kMaxTopLogprobs];
  __shared__ int num_top;
  unsigned dynamic_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dynamic_bytes));
  const RowBlocks blocks{llmc_kernels::cluster_size(), llmc_kernels::cluster_rank()};
  if (dynamic_bytes < unsigned(sharedBytes(int(blocks.size)))) __trap();
  const Histograms h{blocks.size > 1 ? kFirstLevelBuckets : 0};
  const int r = int(blockIdx.x / blocks.size);
  const RowSampling p = params[r];
  float *raw = logits + r * cols;
  const int V = int(cols);
  const int slice = sliceTokens(V, int(blocks.size));
  const int lo = min(V, int(blocks.rank) * slice), hi = min(V, lo + slice);
  const bool writes = blocks.rank == 0 && threadIdx.x == 0;  // the row's result

  // 0. Penalties and bans, each block in its slice: one adjustment per
  // token, so no two threads write the same logit.
  for (int j = threadIdx.x; j < p.num_adjustments; j += kThreads) {
    const LogitAdjustment a = adjustments[p.first_adjustment + j];
    if (a.token < lo || a.token >= hi) continue;
    const float v = raw[a.token];
    raw[a.token] = (v > 0 ? v / a.repetition : v * a.repetition) - a.subtract;
  }
  blocks.sync();  // the other blocks read any logit from here on

  // 1. Masking and the greedy token: the smallest key (rank, then id). The
  // same pass adds up the exps behind the raw logprobs (step 2): each thread
  // sums exp(x - the largest logit it has seen), rescaling its sum when that
  // grows, and the sums are combined at the row's maximum.
  MaskedRow row{raw, V, lo, hi, false};
  unsigned long long best = ~0ull;
  float own_max = -plus_inf();
  double own_sum = 0;
  row.for_each([&](int i, float x) {
    if (i < 0 || x == -plus_inf()) return;
    const unsigned long long key = key_of(rank_of(x), i);
    if (key < best) best = key;
    if (x > own_max) {
      own_sum *= expf(own_max - x);
      own_max = x;
    }
    own_sum += expf(x - own_max);
  });
  const auto smaller = [](unsigned long long a, unsigned long long b) { return a < b ? a : b; };
  const auto add = [](double a, double b) { return a + b; };
  best = row_all_reduce(best, smaller, blocks);
  if (best == ~0ull) {  // every logit -inf or NaN: nothing can be sampled
    if (writes) {
      out[r].token = -1;
      out[r].logprob = -plus_inf();
      out[r].num_top = 0;
    }
    return;
  }
  const int greedy = int(best & 0xffffffffu);
  float m = row(greedy);
  double sum = row_all_reduce(own_max == -plus_inf() ? 0.0 : own_sum * exp(double(own_max) - double(m)), add,
                              blocks);
  if (m == plus_inf()) {  // only the +inf tokens stay, each with logit 0
    row.plus_inf_row = true;
    m = 0;
    sum = 0;
    row.for_each([&](int i, float x) {
      if (i >= 0) sum += expf(x);
    });
    sum = row_all_reduce(sum, add, blocks);
  }

  // 2. Raw logprobs.
  const double lse = m + log(sum);
  auto logprob = [&](int token) { return float(double(row(token)) - lse); };

  if (threadIdx.x == 0) num_top = 0;
  if (p.logprobs > 0) {
    // The n-th token of the order among the finite ones; every finite token
    // up to it in the order (each block collects its slice's, block 0 all
    // of them), sorted by one thread (n <= 20).
    const int n = min(p.logprobs, llmc::sample::kMaxTopLogprobs);
    auto finite = [](int, float x, unsigned) { return x != -plus_inf() ? 1.0 : 0.0; };
    const int nth = select_in_order(row, finite, double(n), false, true, d, h, blocks);
    const unsigned long long cut = key_of(rank_of(row(nth)), nth);
    row.for_each([&](int i, float x) {
      if (i >= 0 && x != -plus_inf() && key_of(rank_of(x), i) <= cut)
        top_keys[atomicAdd(&num_top, 1)] = key_of(rank_of(x), i);
    });
    blocks.sync();
    if (writes) {
      for (unsigned b = 1; b < blocks.size; ++b) {
        const int count = *blocks.at(&num_top, b);
        for (int k = 0; k < count; ++k) top_keys[num_top++] = *blocks.at(&top_keys[k], b);
      }
      for (int a = 1; a < num_top; ++a)
        for (int b = a; b > 0 && top_keys[b] < top_keys[b - 1]; --b) {
          const unsigned long long t = top_keys[b];
          top_keys[b] = top_keys[b - 1];
          top_keys[b - 1] = t;
        }
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
    if (p.top_k > 0)
      cut = key_at(select_in_order(row, kept_count, double(p.top_k), false, true, d, h, blocks));
    if (p.top_p < 1) cut = key_at(select_in_order(row, kept_weight, p.top_p, true, true, d, h, blocks));
    min_p = p.min_p > 0;
    // 5. Inverse CDF.
    token = select_in_order(row, kept_weight, p.u, true, false, d, h, blocks);
  }

  if (writes) {
    RowSample &result = out[r];
    result.token = token;
    result.logprob = logprob(token);
    result.num_top = num_top;
    for (int k = 0; k < num_top; ++k) {
      const int id = int(top_keys[k] & 0xffffffffu);
      result.top_tokens[k] = id;
      result.top_logprobs[k] = logprob(id);
    }
  }
  // No block may exit (releasing its shared memory) while others read it.
  if (blocks.size > 1) blocks.sync();
}
