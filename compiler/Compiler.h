// llmc's compiler entry points, with no MLIR types in the interface so the
// command-line driver stays plain C++.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmc {

/// A compilation that cannot succeed; the message is one line for the user.
class CompileError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

struct CompileOptions {
  std::string model_dir;
  std::string output_dir;  // empty: write no engine (only --emit output)
  /// Print a stage to `out`: "llm" (as built), "llm-fused", "exec" (after
  /// lowering and memory planning) or "plan" (the plan as JSON). Empty: none.
  std::string emit;
  std::string dtype;  // compute dtype; empty: the checkpoint's
  int64_t max_seq_len = 0;
  int64_t max_tokens_per_forward = 8192;
  int64_t max_seqs_per_forward = 256;
  int64_t kv_page_size = 16;
  /// GPU architectures (e.g. "sm_90a") to precompile every kernel for; the
  /// runtime then loads them without JIT.
  std::vector<std::string> archs;
  bool fuse = true;
  bool progress = false;  // step-by-step progress on stderr
};

/// Compiles MODEL_DIR into an engine. Warnings go to `log`.
void compile(const CompileOptions &options, std::ostream &out, std::ostream &log);

/// Writes MODEL_DIR/model.safetensors with deterministic pseudo-random weights
/// for the model that MODEL_DIR/config.json describes (normal(0, 0.02) for
/// matrices, ones for norms, zeros for biases) in the config's dtype.
void writeRandomWeights(const std::string &model_dir, uint64_t seed, std::ostream &log);

} // namespace llmc
