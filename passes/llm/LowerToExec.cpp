//===- LowerToExec.cpp - llm forward function -> exec kernel program -------===//
//
// Walks the forward function once, in order, and emits for each llm op the
// buffers and launches that compute it. ABI inputs, weights, KV-cache handles
// and rope tables are created once at the top of the function; kernels are
// declared once per specialisation as module-level exec.kernel symbols.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "kernels/Catalog.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/TypeSwitch.h"

#include <map>

namespace llmc {
#define GEN_PASS_DEF_LOWERTOEXEC
#include "passes/llm/Passes.h.inc"
} // namespace llmc

using namespace mlir;
using namespace llmc;

namespace {

std::string dtypeName(Type type) {
  if (type.isBF16()) return "bf16";
  if (type.isF16()) return "f16";
  return "f32";
}

class Lowering {
public:
  Lowering(ModuleOp module, func::FuncOp func, int64_t pageSize)
      : module(module), func(func), symbols(module), builder(func.getContext()),
        topBuilder(func.getContext()), pageSize(pageSize) {}

  LogicalResult run() {
    Block &body = func.getBody().front();
    topBuilder.setInsertionPointToStart(&body);
    // The ABI inputs the function takes as arguments become exec.input ops.
    static constexpr const char *argumentNames[] = {"token_ids", "positions"};
    if (body.getNumArguments() != 2)
      return func.emitOpError() << "forward function must take (token_ids, positions)";
    for (auto [argument, name] : llvm::zip(body.getArguments(), argumentNames))
      mapped[argument] = abiInput(name);

    SmallVector<Operation *> lowered;
    for (Operation &op : llvm::make_early_inc_range(body.without_terminator())) {
      if (op.getDialect() != op.getContext()->getLoadedDialect<llm::LlmDialect>())
        continue;
      builder.setInsertionPoint(&op);
      if (failed(lower(&op)))
        return failure();
      lowered.push_back(&op);
    }
    if (weightError)
      return failure();

    auto ret = cast<func::ReturnOp>(body.getTerminator());
    if (ret.getNumOperands() != 1)
      return ret.emitOpError() << "forward function must return the logits only";
    builder.setInsertionPoint(ret);
    exec::OutputOp::create(builder, ret.getLoc(), "logits", lookup(ret.getOperand(0)));
    func::ReturnOp::create(builder, ret.getLoc());
    ret->erase();
    for (Operation *op : llvm::reverse(lowered)) {
      op->dropAllUses();
      op->erase();
    }
    body.eraseArguments(0, body.getNumArguments());
    func.setFunctionType(FunctionType::get(func.getContext(), {}, {}));
    return success();
  }

private:
  LogicalResult lower(Operation *op) {
    return llvm::TypeSwitch<Operation *, LogicalResult>(op)
        // Weights are lowered when an op uses them, so that parameters only
        // feeding a fused concat do not become weights of their own.
        .Case<llm::ParamOp, llm::ConcatOp>([&](auto) { return success(); })
        .Case([&](llm::EmbeddingOp op) {
          Value out = alloc(op.getResult());
          launch(op, "embedding", {hiddenOf(op.getResult())}, op.getType(),
                 {lookup(op.getTokenIds()), lookup(op.getTable()), out}, {tokens()});
          return success();
        })
        .Case([&](llm::RmsNormOp op) {
          Value out = alloc(op.getResult());
          launch(op, "rms_norm", {hiddenOf(op.getInput())}, op.getType(),
                 {lookup(op.getInput()), lookup(op.getWeight()), out}, {eps(op.getEps()), tokens()});
          return success();
        })
        .Case([&](llm::AddRmsNormOp op) {
          Value sum = alloc(op.getSum()), normed = alloc(op.getNormed());
          launch(op, "add_rms_norm", {hiddenOf(op.getLhs())}, op.getLhs().getType(),
                 {lookup(op.getLhs()), lookup(op.getRhs()), lookup(op.getWeight()), sum, normed},
                 {eps(op.getEps()), tokens()});
          return success();
        })
        .Case([&](llm::LinearOp op) {
          Value bias = op.getBias() ? lookup(op.getBias()) : Value();
          exec::GemmOp::create(builder, op.getLoc(), lookup(op.getInput()),
                                       lookup(op.getWeight()), bias, alloc(op.getResult()));
          return success();
        })
        .Case([&](llm::RopeKvWriteOp op) {
          auto [keys, values] = kvCache(op.getLayer());
          auto rope = op.getRope();
          Value out = alloc(op.getQuery());
          launch(op, "rope_kv_write",
                 {int64_t(op.getNumHeads()), int64_t(op.getNumKvHeads()),
                  int64_t(op.getHeadDim()), rope.getRotaryDim(), pageSize},
                 op.getQkv().getType(),
                 {lookup(op.getQkv()), lookup(op.getPositions()), abiInput("qo_indptr"),
                  abiInput("kv_indptr"), abiInput("kv_page_indices"), ropeTable(rope), out, keys,
                  values},
                 {tokens(), seqs()});
          return success();
        })
        .Case([&](llm::PagedAttentionOp op) {
          auto [keys, values] = kvCache(op.getLayer());
          Value out = alloc(op.getResult());
          launch(op, "paged_attention",
                 {int64_t(op.getNumHeads()), int64_t(op.getNumKvHeads()),
                  int64_t(op.getHeadDim()), pageSize},
                 op.getType(),
                 {lookup(op.getQuery()), keys, values, abiInput("positions"),
                  abiInput("qo_indptr"), abiInput("kv_indptr"), abiInput("kv_page_indices"),
                  abiInput("kv_last_page_len"), out},
                 {builder.getF32FloatAttr(op.getScale().convertToDouble()),
                  builder.getI32IntegerAttr(int32_t(op.getSlidingWindow())), tokens(), seqs()});
          return success();
        })
        .Case([&](llm::GatedSiluOp op) {
          Value out = alloc(op.getResult());
          launch(op, "silu_mul", {hiddenOf(op.getResult())}, op.getType(),
                 {lookup(op.getGateUp()), out}, {tokens()});
          return success();
        })
        .Case([&](llm::LogitsOp op) {
          auto hiddenType = cast<RankedTensorType>(op.getHidden().getType());
          Value rows = alloc(hiddenType, "seqs");
          launch(op, "gather_rows", {hiddenOf(op.getHidden())}, hiddenType,
                 {lookup(op.getHidden()), abiInput("logits_rows"), rows}, {seqs()});
          Value logits = alloc(op.getType(), "seqs");
          exec::GemmOp::create(builder, op.getLoc(), rows, lookup(op.getLmHead()), Value(), logits);
          mapped[op.getResult()] = logits;
          return success();
        })
        .Case<llm::RopeOp, llm::AttentionOp, llm::SplitOp, llm::AddOp, llm::SiluMulOp>(
            [&](Operation *op) {
              return op->emitOpError()
                     << "has no kernel of its own; run the llm fusion passes before "
                        "llm-lower-to-exec";
            })
        .Default([&](Operation *op) { return op->emitOpError() << "cannot be lowered to exec"; });
  }

  // --- values ---------------------------------------------------------------

  Value lookup(Value value) {
    if (isa_and_nonnull<llm::ParamOp, llm::ConcatOp>(value.getDefiningOp()) && !mapped.count(value))
      return lowerWeight(value);
    auto it = mapped.find(value);
    assert(it != mapped.end() && "operand lowered before use");
    return it->second;
  }

  static int64_t hiddenOf(Value activation) {
    return cast<RankedTensorType>(activation.getType()).getDimSize(1);
  }

  Value alloc(TensorType type, StringRef rows) {
    auto bufferType = exec::BufferType::get(builder.getContext(), rows, type.getDimSize(1),
                                            type.getElementType());
    return exec::AllocOp::create(builder, builder.getUnknownLoc(), bufferType, IntegerAttr());
  }

  Value alloc(Value activation) {
    Value buffer = alloc(cast<TensorType>(activation.getType()), "tokens");
    mapped[activation] = buffer;
    return buffer;
  }

  Value abiInput(StringRef name) {
    Value &input = inputs[name];
    if (!input) {
      StringRef rows;
      for (const plan::AbiInput &abi : plan::kAbiInputs)
        if (name == abi.name)
          rows = abi.rows;
      auto type = exec::BufferType::get(builder.getContext(), rows, 1, builder.getI32Type());
      input = exec::InputOp::create(topBuilder, func.getLoc(), type, name);
    }
    return input;
  }

  // Flattens a tree of same-axis llm.concat over llm.param into one recipe.
  LogicalResult collectSources(Value weight, int64_t axis, SmallVector<Attribute> &sources,
                               SmallVector<Attribute> &shapes) {
    if (auto param = weight.getDefiningOp<llm::ParamOp>()) {
      sources.push_back(param.getNameAttr());
      shapes.push_back(DenseI64ArrayAttr::get(param.getContext(), param.getType().getShape()));
      return success();
    }
    auto concat = weight.getDefiningOp<llm::ConcatOp>();
    if (!concat || int64_t(concat.getAxis()) != axis)
      return emitError(weight.getLoc()) << "weights must be llm.param or llm.concat along one axis";
    for (Value input : concat.getInputs())
      if (failed(collectSources(input, axis, sources, shapes)))
        return failure();
    return success();
  }

  Value lowerWeight(Value weight) {
    auto concat = weight.getDefiningOp<llm::ConcatOp>();
    int64_t axis = concat ? int64_t(concat.getAxis()) : 0;
    auto type = cast<RankedTensorType>(weight.getType());
    SmallVector<Attribute> sources, shapes;
    if (failed(collectSources(weight, axis, sources, shapes))) {
      weightError = true;
      sources = {StringAttr::get(weight.getContext(), "<invalid>")};
      shapes = {DenseI64ArrayAttr::get(weight.getContext(), type.getShape())};
    }
    auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
    std::string key = std::to_string(axis);
    for (Attribute source : sources)
      key += "|" + cast<StringAttr>(source).str();
    Value &lowered = weights[key];
    if (!lowered)
      lowered = exec::WeightOp::create(topBuilder, weight.getLoc(), memrefType,
                                       topBuilder.getArrayAttr(sources),
                                       topBuilder.getArrayAttr(shapes),
                                       topBuilder.getI64IntegerAttr(axis));
    mapped[weight] = lowered;
    return lowered;
  }

  std::pair<Value, Value> kvCache(int64_t layer) {
    auto &entry = kvLayers[layer];
    if (!entry.first) {
      auto cache = exec::KvCacheOp::create(topBuilder, 
          func.getLoc(), exec::KvPagesType::get(builder.getContext()),
          exec::KvPagesType::get(builder.getContext()), topBuilder.getI64IntegerAttr(layer));
      entry = {cache.getKeys(), cache.getValues()};
    }
    return entry;
  }

  // The rope frequencies (with any scaling) are computed here, once per
  // distinct rope attribute, so the kernel only multiplies and rotates.
  Value ropeTable(llm::RopeAttr rope) {
    Value &table = ropeTables[rope];
    if (!table) {
      std::vector<float> frequencies = rope.inverseFrequencies();
      auto tensorType =
          RankedTensorType::get({int64_t(frequencies.size())}, topBuilder.getF32Type());
      auto value = DenseElementsAttr::get(tensorType, ArrayRef<float>(frequencies));
      table = exec::ConstantOp::create(topBuilder, 
          func.getLoc(), MemRefType::get(tensorType.getShape(), tensorType.getElementType()),
          value);
    }
    return table;
  }

  Attribute tokens() { return builder.getStringAttr("tokens"); }
  Attribute seqs() { return builder.getStringAttr("seqs"); }
  Attribute eps(APFloat value) { return builder.getF32FloatAttr(value.convertToDouble()); }

  // --- kernels --------------------------------------------------------------

  FlatSymbolRefAttr kernel(StringRef templateName, ArrayRef<int64_t> params, Type dtype) {
    const kernels::KernelTemplate *kernel = kernels::findTemplate(templateName);
    assert(kernel && kernel->params.size() == params.size() && "kernel catalog mismatch");
    std::string name = templateName.str();
    for (int64_t param : params)
      name += "_" + std::to_string(param);
    name += "_" + dtypeName(dtype);
    if (!symbols.lookup(name)) {
      llmc_kernels::LaunchShape shape = kernel->launch(params);
      auto sym = [&](const llmc_kernels::SymExpr &e) -> Attribute {
        return exec::SymExprAttr::get(builder.getContext(), e.tokens, e.seqs, e.constant,
                                      e.divisor);
      };
      OpBuilder moduleBuilder(module.getBodyRegion());
      moduleBuilder.setInsertionPoint(func);
      auto op = exec::KernelOp::create(moduleBuilder, 
          func.getLoc(), name, templateName, moduleBuilder.getDenseI64ArrayAttr(params), dtype,
          moduleBuilder.getArrayAttr({sym(shape.grid_x), sym(shape.grid_y), sym(shape.grid_z)}),
          int64_t(shape.block_threads), int64_t(shape.shared_bytes), int64_t(shape.max_cluster));
      symbols.insert(op);
    }
    return FlatSymbolRefAttr::get(builder.getContext(), name);
  }

  void launch(Operation *op, StringRef templateName, ArrayRef<int64_t> params, Type valueType,
              ArrayRef<Value> args, ArrayRef<Attribute> scalars) {
    Type dtype = cast<TensorType>(valueType).getElementType();
    exec::LaunchOp::create(builder, op->getLoc(), kernel(templateName, params, dtype), args,
                                   builder.getArrayAttr(scalars));
  }

  ModuleOp module;
  func::FuncOp func;
  SymbolTable symbols;
  OpBuilder builder, topBuilder;
  int64_t pageSize;
  DenseMap<Value, Value> mapped;
  llvm::StringMap<Value> inputs, weights;
  std::map<int64_t, std::pair<Value, Value>> kvLayers;
  DenseMap<Attribute, Value> ropeTables;
  bool weightError = false;
};

struct LowerToExecPass : public llmc::impl::LowerToExecBase<LowerToExecPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto model = module->getAttrOfType<DictionaryAttr>("llm.model");
    auto pageSize = model ? model.getAs<IntegerAttr>("kv_page_size") : IntegerAttr();
    if (!pageSize || pageSize.getInt() <= 0) {
      module.emitError() << "module needs an llm.model dictionary with a positive kv_page_size";
      return signalPassFailure();
    }
    auto func = module.lookupSymbol<func::FuncOp>("forward");
    if (!func) {
      module.emitError() << "no func.func @forward to lower";
      return signalPassFailure();
    }
    if (failed(Lowering(module, func, pageSize.getInt()).run()))
      signalPassFailure();
  }
};

} // namespace
