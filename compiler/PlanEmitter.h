// exec module -> plan.llmp bytes.
#pragma once

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <vector>

namespace llmc {

struct PlanLimits {
  int64_t max_tokens_per_forward;
  int64_t max_seqs_per_forward;
};

/// Serialises a module that went through the compile pipeline (exec kernels,
/// a memory-planned @forward, the llm.model dictionary). Fails with a
/// diagnostic on the module when something cannot be represented.
mlir::FailureOr<std::vector<uint8_t>> emitPlan(mlir::ModuleOp module, const PlanLimits &limits);

} // namespace llmc
