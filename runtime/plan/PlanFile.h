// Loading and verifying plan.llmp. A plan that is truncated, corrupted, of
// another format or of another major schema version is a PlanError, never
// undefined behaviour: every index a program uses is checked here, once.
#pragma once

#include "runtime/plan/plan_generated.h"

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace llmc::plan {

inline constexpr int kSchemaMajor = 1;
inline constexpr int kSchemaMinor = 4;

class PlanError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class PlanFile {
public:
  /// Reads and verifies ENGINE_DIR/plan.llmp (or a path to a .llmp file).
  static PlanFile load(const std::string &path);
  /// Verifies a plan held in memory (copied into aligned storage).
  static PlanFile fromBytes(std::span<const uint8_t> bytes, const std::string &source);

  const Plan &plan() const { return *plan_; }
  std::span<const uint8_t> bytes() const { return {data_.get(), size_}; }

private:
  struct FreeAligned {
    void operator()(uint8_t *p) const;
  };
  std::unique_ptr<uint8_t[], FreeAligned> data_;
  size_t size_ = 0;
  const Plan *plan_ = nullptr;
};

/// Bytes of one token's K and V over all layers.
int64_t kvBytesPerToken(const Plan &plan);
/// Bytes of all of a rank's parameters.
int64_t parameterBytes(const RankProgram &rank);
/// Workspace bytes for the given batch limits.
int64_t workspaceBytes(const RankProgram &rank, int64_t max_tokens, int64_t max_seqs);

/// Name of a dtype as the tools print it (bf16, f16, f32, i32).
const char *dtypeName(DType dtype);
/// Bytes of one element.
int dtypeBytes(DType dtype);

} // namespace llmc::plan
