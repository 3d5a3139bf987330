//===- FuseRopeKvWrite.cpp - rope + KV-cache append in one kernel ----------===//

#include "passes/Passes.h"

#include "passes/PatternPass.h"

namespace llmc {
#define GEN_PASS_DEF_FUSEROPEKVWRITE
#include "passes/llm/Passes.h.inc"
} // namespace llmc

using namespace mlir;
using namespace llmc;
using namespace llmc::llm;

namespace {

struct RopeIntoKvWrite : public OpRewritePattern<AttentionOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(AttentionOp attention, PatternRewriter &rewriter) const override {
    auto queryRope = attention.getQuery().getDefiningOp<RopeOp>();
    auto keyRope = attention.getKey().getDefiningOp<RopeOp>();
    if (!queryRope || !keyRope)
      return rewriter.notifyMatchFailure(attention, "query or key is not rotated by llm.rope");
    if (queryRope.getRope() != keyRope.getRope() ||
        queryRope.getPositions() != keyRope.getPositions())
      return rewriter.notifyMatchFailure(attention, "query and key ropes differ");
    auto split = queryRope.getInput().getDefiningOp<SplitOp>();
    if (!split || split.getNumResults() != 3 || queryRope.getInput() != split.getResult(0) ||
        keyRope.getInput() != split.getResult(1) || attention.getValue() != split.getResult(2))
      return rewriter.notifyMatchFailure(attention, "q, k, v are not one fused projection");
    if (queryRope.getHeadDim() != attention.getHeadDim() ||
        queryRope.getNumHeads() != attention.getNumHeads() ||
        keyRope.getNumHeads() != attention.getNumKvHeads())
      return rewriter.notifyMatchFailure(attention, "rope and attention head shapes differ");

    Location loc = rewriter.getFusedLoc({queryRope.getLoc(), keyRope.getLoc(), attention.getLoc()});
    auto query = RopeKvWriteOp::create(rewriter, 
        loc, attention.getQuery().getType(), split.getInput(), queryRope.getPositions(),
        attention.getLayerAttr(), attention.getNumHeadsAttr(), attention.getNumKvHeadsAttr(),
        attention.getHeadDimAttr(), queryRope.getRope());
    rewriter.replaceOpWithNewOp<PagedAttentionOp>(
        attention, attention.getType(), query, attention.getLayerAttr(),
        attention.getNumHeadsAttr(), attention.getNumKvHeadsAttr(), attention.getHeadDimAttr(),
        attention.getScaleAttr(), attention.getSlidingWindowAttr());
    return success();
  }
};

struct FuseRopeKvWritePass : public llmc::impl::FuseRopeKvWriteBase<FuseRopeKvWritePass> {
  void runOnOperation() override {
    if (failed(applyFusionPatterns<RopeIntoKvWrite>(getOperation())))
      signalPassFailure();
  }
};

} // namespace
