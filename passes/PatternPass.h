//===- PatternPass.h - run a set of rewrite patterns to a fixed point -----===//
#pragma once

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace llmc {

/// Applies `Patterns` greedily to `op`; the body of every fusion pass.
template <typename... Patterns>
mlir::LogicalResult applyFusionPatterns(mlir::Operation *op) {
  mlir::RewritePatternSet patterns(op->getContext());
  patterns.add<Patterns...>(op->getContext());
  return mlir::applyPatternsGreedily(op, std::move(patterns));
}

} // namespace llmc
