// Launch geometry shared by the compiler (host C++) and the kernels (NVRTC).
// A grid dimension is a function of the forward's symbolic sizes:
//   value = ceil((tokens * T + seqs * S + constant) / divisor)
// where T = num_tokens and S = num_seqs of the batch being run.
#pragma once

namespace llmc_kernels {

struct SymExpr {
  long long tokens = 0;
  long long seqs = 0;
  long long constant = 1;
  long long divisor = 1;

  constexpr long long eval(long long num_tokens, long long num_seqs) const {
    long long numerator = tokens * num_tokens + seqs * num_seqs + constant;
    return (numerator + divisor - 1) / divisor;
  }
};

constexpr SymExpr kOne{0, 0, 1, 1};
constexpr SymExpr perToken(long long divisor = 1) { return SymExpr{1, 0, 0, divisor}; }
constexpr SymExpr perSeq(long long divisor = 1) { return SymExpr{0, 1, 0, divisor}; }

struct LaunchShape {
  SymExpr grid_x = kOne;
  SymExpr grid_y = kOne;
  SymExpr grid_z = kOne;
  int block_threads = 1;
  int shared_bytes = 0;
};

}  // namespace llmc_kernels
