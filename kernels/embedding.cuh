// embedding: out[t, :] = table[token_ids[t], :].
#pragma once

namespace llmc_kernels {

// One thread per 16-byte bf16/f16 vector (8 elements) of the row, in whole
// warps, between 1 and 32 warps; longer rows loop.
constexpr int embedding_block_threads(int hidden) {
  int t = ((hidden + 7) / 8 + 31) / 32 * 32;
  return t < 32 ? 32 : (t > 1024 ? 1024 : t);
}

template <int HIDDEN>
struct EmbeddingCfg {
  static constexpr int kBlock = embedding_block_threads(HIDDEN);
};

}  // namespace llmc_kernels

#ifdef __CUDACC__

namespace llmc_kernels {

// One block per token. token_ids must be in [0, vocab): not checked.
template <int HIDDEN, typename T>
__global__ void __launch_bounds__(EmbeddingCfg<HIDDEN>::kBlock)
    embedding(const int* token_ids, const T* table, T* out, int num_tokens) {
  begin_after_previous_kernels();
  constexpr int BLOCK = EmbeddingCfg<HIDDEN>::kBlock;
  const int t = blockIdx.x;
  if (t >= num_tokens) return;
  const long long id = token_ids[t];
  copy_row<HIDDEN, BLOCK>(table + id * HIDDEN, out + static_cast<long long>(t) * HIDDEN);
}

}  // namespace llmc_kernels

#endif  // __CUDACC__

// ---- launch geometry (host and device) ----
namespace llmc_kernels {

constexpr LaunchShape embedding_launch(int hidden) {
  LaunchShape s;
  s.grid_x = perToken();  // one block per token
  s.block_threads = embedding_block_threads(hidden);
  return s;
}

}  // namespace llmc_kernels
