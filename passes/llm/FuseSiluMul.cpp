//===- FuseSiluMul.cpp - silu(gate) * up on the fused gate/up projection ---===//

#include "passes/Passes.h"

#include "passes/PatternPass.h"

namespace llmc {
#define GEN_PASS_DEF_FUSESILUMUL
#include "passes/llm/Passes.h.inc"
} // namespace llmc

using namespace mlir;
using namespace llmc;
using namespace llmc::llm;

namespace {

struct SiluMulOfSplit : public OpRewritePattern<SiluMulOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(SiluMulOp siluMul, PatternRewriter &rewriter) const override {
    auto split = siluMul.getGate().getDefiningOp<SplitOp>();
    if (!split || split.getNumResults() != 2 || siluMul.getGate() != split.getResult(0) ||
        siluMul.getUp() != split.getResult(1))
      return rewriter.notifyMatchFailure(siluMul, "gate and up are not one fused projection");
    rewriter.replaceOpWithNewOp<GatedSiluOp>(siluMul, siluMul.getType(), split.getInput());
    return success();
  }
};

struct FuseSiluMulPass : public llmc::impl::FuseSiluMulBase<FuseSiluMulPass> {
  void runOnOperation() override {
    if (failed(applyFusionPatterns<SiluMulOfSplit>(getOperation())))
      signalPassFailure();
  }
};

} // namespace
