//===- FuseAddRmsNorm.cpp - residual add + RMS norm in one kernel ----------===//

#include "passes/Passes.h"

#include "passes/PatternPass.h"

namespace llmc {
#define GEN_PASS_DEF_FUSEADDRMSNORM
#include "passes/llm/Passes.h.inc"
} // namespace llmc

using namespace mlir;
using namespace llmc;
using namespace llmc::llm;

namespace {

struct AddThenRmsNorm : public OpRewritePattern<RmsNormOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(RmsNormOp norm, PatternRewriter &rewriter) const override {
    auto add = norm.getInput().getDefiningOp<AddOp>();
    if (!add)
      return rewriter.notifyMatchFailure(norm, "input is not an llm.add");
    rewriter.setInsertionPoint(add);
    Type type = add.getType();
    auto fused = AddRmsNormOp::create(rewriter, 
        rewriter.getFusedLoc({add.getLoc(), norm.getLoc()}), TypeRange{type, type}, add.getLhs(),
        add.getRhs(), norm.getWeight(), norm.getEpsAttr());
    rewriter.replaceOp(norm, fused.getNormed());
    rewriter.replaceOp(add, fused.getSum());
    return success();
  }
};

struct FuseAddRmsNormPass : public llmc::impl::FuseAddRmsNormBase<FuseAddRmsNormPass> {
  void runOnOperation() override {
    if (failed(applyFusionPatterns<AddThenRmsNorm>(getOperation())))
      signalPassFailure();
  }
};

} // namespace
