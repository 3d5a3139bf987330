//===- FuseProjections.cpp - one GEMM for linears sharing an input ---------===//

#include "passes/Passes.h"

#include "mlir/IR/Builders.h"

namespace llmc {
#define GEN_PASS_DEF_FUSEPROJECTIONS
#include "passes/llm/Passes.h.inc"
} // namespace llmc

using namespace mlir;
using namespace llmc;
using namespace llmc::llm;

namespace {

// Weight operands must dominate the fused linear, which replaces the first
// linear of the group. Parameters have no operands, so moving them up is
// always legal; anything else defined later makes the group unfusable.
bool hoistBefore(Value weight, Operation *insertionPoint) {
  Operation *def = weight.getDefiningOp();
  if (!def || def->getBlock() != insertionPoint->getBlock() || def->isBeforeInBlock(insertionPoint))
    return true;
  if (!isa<ParamOp>(def))
    return false;
  def->moveBefore(insertionPoint);
  return true;
}

Value concatWeights(OpBuilder &builder, Location loc, ArrayRef<Value> weights) {
  auto first = cast<RankedTensorType>(weights.front().getType());
  SmallVector<int64_t> shape(first.getShape());
  shape[0] = 0;
  for (Value weight : weights)
    shape[0] += cast<RankedTensorType>(weight.getType()).getDimSize(0);
  auto type = RankedTensorType::get(shape, first.getElementType());
  return ConcatOp::create(builder, loc, type, weights, builder.getI64IntegerAttr(0));
}

void fuseGroup(SmallVector<LinearOp> group) {
  llvm::sort(group, [](LinearOp a, LinearOp b) { return a->isBeforeInBlock(b); });
  Operation *first = group.front();
  for (LinearOp linear : group)
    if (!hoistBefore(linear.getWeight(), first) ||
        (linear.getBias() && !hoistBefore(linear.getBias(), first)))
      return;

  OpBuilder builder(first);
  Location loc = builder.getFusedLoc(llvm::map_to_vector(group, [](LinearOp op) { return op.getLoc(); }));
  SmallVector<Value> weights, biases;
  SmallVector<Type> partTypes;
  for (LinearOp linear : group) {
    weights.push_back(linear.getWeight());
    if (linear.getBias())
      biases.push_back(linear.getBias());
    partTypes.push_back(linear.getResult().getType());
  }
  Value weight = concatWeights(builder, loc, weights);
  Value bias = biases.empty() ? Value() : concatWeights(builder, loc, biases);
  auto inputType = cast<RankedTensorType>(group.front().getInput().getType());
  int64_t fusedColumns = cast<RankedTensorType>(weight.getType()).getDimSize(0);
  auto fusedType =
      RankedTensorType::get({ShapedType::kDynamic, fusedColumns}, inputType.getElementType());
  Value fused = LinearOp::create(builder, loc, fusedType, group.front().getInput(), weight, bias);
  auto split = SplitOp::create(builder, loc, partTypes, fused);
  for (auto [linear, part] : llvm::zip(group, split.getResults())) {
    linear.getResult().replaceAllUsesWith(part);
    linear->erase();
  }
}

struct FuseProjectionsPass : public llmc::impl::FuseProjectionsBase<FuseProjectionsPass> {
  void runOnOperation() override {
    // Group linears by input; a group needs the same dtype and either all or
    // none of its members with a bias.
    llvm::MapVector<std::pair<Value, unsigned>, SmallVector<LinearOp>> groups;
    getOperation().walk([&](LinearOp linear) {
      groups[{linear.getInput(), linear.getBias() ? 1u : 0u}].push_back(linear);
    });
    for (auto &[key, group] : groups)
      if (group.size() > 1 && llvm::all_of(group, [&](LinearOp op) {
            return op->getBlock() == group.front()->getBlock();
          }))
        fuseGroup(group);
  }
};

} // namespace
