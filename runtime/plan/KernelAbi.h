// The argument lists of the kernel templates (kernels/*.cuh) as the runtime
// sees them: how many template parameters, buffers and scalars each launch
// has, and the row width each buffer argument must have. The plan verifier
// checks every launch against this table, so a kernel never indexes past its
// buffers; the CPU backend dispatches on the same table.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace llmc::plan {

struct KernelAbi {
  std::string_view name;
  size_t params, buffers, scalars;
  /// Expected columns of each buffer argument given the template parameters
  /// (0: not a row buffer, e.g. the KV pages or an index array).
  std::vector<int64_t> (*widths)(std::span<const int64_t> params);
};

inline const KernelAbi *findKernelAbi(std::string_view name) {
  using P = std::span<const int64_t>;
  static const KernelAbi table[] = {
      {"embedding", 1, 3, 1, [](P p) { return std::vector<int64_t>{1, p[0], p[0]}; }},
      {"rms_norm", 1, 3, 2, [](P p) { return std::vector<int64_t>{p[0], p[0], p[0]}; }},
      {"add_rms_norm", 1, 5, 2, [](P p) { return std::vector<int64_t>{p[0], p[0], p[0], p[0], p[0]}; }},
      // <NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, ROTARY_DIM, PAGE_SIZE>(qkv, positions,
      // qo_indptr, kv_indptr, kv_page_indices, inv_freq, q_out, k_cache, v_cache)
      {"rope_kv_write", 5, 9, 2,
       [](P p) {
         return std::vector<int64_t>{(p[0] + 2 * p[1]) * p[2], 1, 1, 1, 1, p[3] / 2, p[0] * p[2], 0, 0};
       }},
      // <NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE>(q, k_cache, v_cache, positions,
      // qo_indptr, kv_indptr, kv_page_indices, kv_last_page_len, out)
      {"paged_attention", 4, 9, 4,
       [](P p) { return std::vector<int64_t>{p[0] * p[2], 0, 0, 1, 1, 1, 1, 1, p[0] * p[2]}; }},
      {"silu_mul", 1, 2, 1, [](P p) { return std::vector<int64_t>{2 * p[0], p[0]}; }},
      {"gather_rows", 1, 3, 1, [](P p) { return std::vector<int64_t>{p[0], 1, p[0]}; }},
  };
  for (const KernelAbi &abi : table)
    if (abi.name == name)
      return &abi;
  return nullptr;
}

} // namespace llmc::plan
