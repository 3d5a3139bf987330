// exec module -> FlatBuffers plan. One pass over the forward function in
// program order: each buffer-producing op becomes a Buffer entry, each
// launch or GEMM a Step referring to buffers by index.

#include "compiler/PlanEmitter.h"

#include "dialects/exec/ExecDialect.h"
#include "kernels/Catalog.h"
#include "runtime/plan/PlanFile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <algorithm>
#include <cstring>

namespace llmc {
namespace {

using namespace mlir;
namespace fb = flatbuffers;

constexpr const char *kProducer = "llmc 0.1";

plan::DType planDType(Type type) {
  if (type.isBF16()) return plan::DType::bf16;
  if (type.isF16()) return plan::DType::f16;
  if (type.isInteger(32)) return plan::DType::i32;
  return plan::DType::f32;
}

std::string dtypeName(Type type) { return plan::dtypeName(planDType(type)); }

plan::RowCount rowCount(StringRef rows) {
  if (rows == "tokens") return plan::RowCount::tokens;
  if (rows == "seqs") return plan::RowCount::seqs;
  if (rows == "seqs_plus_one") return plan::RowCount::seqs_plus_one;
  return plan::RowCount::pages;
}

// "model.layers.0.self_attn.{q,k,v}_proj.weight" for a fused weight.
std::string fusedName(const std::vector<std::string> &sources) {
  if (sources.size() == 1)
    return sources[0];
  size_t prefix = sources[0].size(), suffix = sources[0].size();
  for (const std::string &source : sources) {
    prefix = std::min(prefix, size_t(std::mismatch(source.begin(), source.end(), sources[0].begin(),
                                                   sources[0].end()).first - source.begin()));
    suffix = std::min(suffix, size_t(std::mismatch(source.rbegin(), source.rend(),
                                                   sources[0].rbegin(), sources[0].rend()).first -
                                     source.rbegin()));
  }
  std::string name = sources[0].substr(0, prefix) + "{";
  for (size_t i = 0; i < sources.size(); ++i) {
    size_t end = sources[i].size() - std::min(suffix, sources[i].size() - prefix);
    if (i)
      name += ',';
    name.append(sources[i], prefix, end - prefix);
  }
  return name + "}" + sources[0].substr(sources[0].size() - std::min(suffix, sources[0].size() - prefix));
}

// The decoder layer named by an op's location ("model.layers.N"), or -1.
// A fused op belongs to the part of the model named last: a residual add
// fused with the next layer's input norm belongs to that next layer.
int32_t layerOf(Location loc) {
  int32_t layer = -1;
  loc->walk([&](Location inner) {
    if (auto name = dyn_cast<NameLoc>(inner)) {
      StringRef text = name.getName().getValue();
      if (!text.consume_front("model.layers.") || text.getAsInteger(10, layer))
        layer = -1;
    }
    return WalkResult::advance();
  });
  return layer;
}

class Emitter {
public:
  Emitter(ModuleOp module, const EmitOptions &options) : module(module), options(options) {
    if (auto model = module->getAttrOfType<DictionaryAttr>("llm.model"))
      if (auto dtype = model.getAs<TypeAttr>("dtype"))
        kvDtype = planDType(dtype.getValue());
  }

  FailureOr<std::vector<uint8_t>> run() {
    auto model = module->getAttrOfType<DictionaryAttr>("llm.model");
    auto func = module.lookupSymbol<func::FuncOp>("forward");
    if (!model || !func || !func->hasAttr("exec.workspace_bytes_per_token"))
      return module.emitError("plan emission needs a memory-planned exec @forward and llm.model");

    std::vector<exec::KernelOp> kernelOps(module.getOps<exec::KernelOp>().begin(),
                                          module.getOps<exec::KernelOp>().end());
    std::vector<KernelSource> sources;
    for (exec::KernelOp kernel : kernelOps)
      sources.push_back(kernelSource(kernel));
    std::vector<std::vector<PrecompiledKernel>> binaries(sources.size());
    std::vector<fb::Offset<plan::RuntimeModule>> runtimeModules;
    if (options.precompile) {
      sources.insert(sources.end(), options.runtime_modules.begin(), options.runtime_modules.end());
      binaries = options.precompile(sources);
      for (size_t j = kernelOps.size(); j < sources.size(); ++j)
        runtimeModules.push_back(plan::CreateRuntimeModuleDirect(
            fbb, sources[j].name.c_str(), sources[j].source.c_str(), sources[j].entry.c_str(),
            strings(sources[j].options).get(), cubins(binaries[j]).get()));
    }
    for (size_t i = 0; i < kernelOps.size(); ++i)
      emitKernel(kernelOps[i], sources[i], binaries[i]);
    if (failed(emitProgram(func)))
      return failure();

    auto integer = [&](StringRef name) { return model.getAs<IntegerAttr>(name).getInt(); };
    Type dtype = cast<TypeAttr>(model.get("dtype")).getValue();
    auto eosIds = cast<DenseI64ArrayAttr>(model.get("eos_token_ids")).asArrayRef();
    std::vector<int64_t> eos(eosIds.begin(), eosIds.end());
    auto bos = model.getAs<IntegerAttr>("bos_token_id");
    auto meta = plan::CreateModelMetaDirect(
        fbb, model.getAs<StringAttr>("architecture").str().c_str(),
        model.getAs<StringAttr>("family").str().c_str(), integer("vocab_size"),
        integer("hidden_size"), integer("num_layers"), integer("num_heads"),
        integer("num_kv_heads"), integer("head_dim"), integer("max_seq_len"), planDType(dtype),
        bos ? bos.getInt() : -1, &eos);
    auto kv = plan::CreateKvCacheSpec(fbb, integer("num_layers"), integer("num_kv_heads"),
                                      integer("head_dim"), integer("kv_page_size"),
                                      planDType(dtype));
    auto parallel = plan::CreateParallelLayout(fbb, 1, 1, 1);
    auto root = plan::CreatePlanDirect(fbb, plan::kSchemaMajor, plan::kSchemaMinor, kProducer, meta,
                                       parallel, kv, &kernels, &ranks,
                                       options.max_tokens_per_forward, options.max_seqs_per_forward,
                                       runtimeModules.empty() ? nullptr : &runtimeModules);
    plan::FinishSizePrefixedPlanBuffer(fbb, root);
    return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  }

private:
  static KernelSource kernelSource(exec::KernelOp kernel) {
    const kernels::KernelTemplate *spec = kernels::findTemplate(kernel.getKernelTemplate());
    std::vector<int64_t> params(kernel.getParams().begin(), kernel.getParams().end());
    // -default-device: the geometry sections are plain constexpr functions.
    return {kernel.getSymName().str(), kernels::moduleSource(*spec),
            kernels::nameExpression(*spec, params, dtypeName(kernel.getDtype())),
            {"-std=c++17", "-default-device"}};
  }

  void emitKernel(exec::KernelOp kernel, const KernelSource &source,
                  const std::vector<PrecompiledKernel> &binaries) {
    std::vector<int64_t> params(kernel.getParams().begin(), kernel.getParams().end());
    std::vector<plan::SymExpr> grid;
    for (Attribute attr : kernel.getGrid()) {
      auto dim = cast<exec::SymExprAttr>(attr);
      grid.emplace_back(dim.getTokens(), dim.getSeqs(), dim.getConstant(), dim.getDivisor());
    }
    std::vector<fb::Offset<fb::String>> entries = {fbb.CreateString(source.entry)};
    std::unique_ptr<std::vector<fb::Offset<fb::String>>> compileOptions = strings(source.options);
    std::unique_ptr<std::vector<fb::Offset<plan::Cubin>>> binaryList = cubins(binaries);
    kernelIndex[kernel.getSymName()] = int32_t(kernels.size());
    kernels.push_back(plan::CreateKernelModuleDirect(
        fbb, source.name.c_str(), source.source.c_str(), &entries, compileOptions.get(),
        kernel.getKernelTemplate().str().c_str(), &params, planDType(kernel.getDtype()), &grid,
        int32_t(kernel.getBlock()), int32_t(kernel.getSharedBytes()), binaryList.get(),
        int32_t(kernel.getMaxCluster()), /*waits_for_previous=*/true));  // every catalog kernel does
  }

  std::unique_ptr<std::vector<fb::Offset<fb::String>>> strings(const std::vector<std::string> &texts) {
    auto out = std::make_unique<std::vector<fb::Offset<fb::String>>>();
    for (const std::string &text : texts)
      out->push_back(fbb.CreateString(text));
    return out;
  }

  // The binaries as plan Cubins; null when there are none.
  std::unique_ptr<std::vector<fb::Offset<plan::Cubin>>> cubins(const std::vector<PrecompiledKernel> &binaries) {
    if (binaries.empty())
      return nullptr;
    auto out = std::make_unique<std::vector<fb::Offset<plan::Cubin>>>();
    for (const PrecompiledKernel &binary : binaries) {
      std::vector<uint8_t> data(binary.cubin.begin(), binary.cubin.end());
      out->push_back(plan::CreateCubinDirect(fbb, binary.arch.c_str(), binary.lowered_name.c_str(), &data));
    }
    return out;
  }

  int32_t addBuffer(Value value, plan::BufferKind kind, const std::string &name, int32_t index,
                    plan::RowCount rows, int64_t cols, plan::DType dtype, int64_t offset = 0) {
    int32_t id = int32_t(buffers.size());
    buffers.push_back(plan::CreateBufferDirect(fbb, kind, name.empty() ? nullptr : name.c_str(),
                                               index, rows, cols, dtype, offset));
    if (value)
      bufferIndex[value] = id;
    return id;
  }

  int32_t addBuffer(Value value, exec::BufferType type, plan::BufferKind kind,
                    const std::string &name, int64_t offset) {
    return addBuffer(value, kind, name, -1, rowCount(type.getRows()), type.getCols(),
                     planDType(type.getElementType()), offset);
  }

  // A fixed-size buffer (weight or constant): rows = product of the leading
  // dimensions, cols = the last one.
  int32_t addFixedBuffer(Value value, MemRefType type, plan::BufferKind kind, int32_t index) {
    return addBuffer(value, kind, "", index, plan::RowCount::fixed, type.getShape().back(),
                     planDType(type.getElementType()));
  }

  LogicalResult emitProgram(func::FuncOp func) {
    std::vector<fb::Offset<plan::Parameter>> parameters;
    std::vector<fb::Offset<plan::Constant>> constants;
    std::vector<fb::Offset<plan::Step>> steps;
    std::vector<fb::Offset<plan::Output>> outputs;

    for (Operation &op : func.getBody().front()) {
      if (auto input = dyn_cast<exec::InputOp>(op)) {
        addBuffer(input, input.getType(), plan::BufferKind::input, input.getName().str(), 0);
      } else if (auto weight = dyn_cast<exec::WeightOp>(op)) {
        std::vector<std::string> names;
        std::vector<fb::Offset<plan::WeightSource>> sources;
        for (auto [source, shape] : llvm::zip(weight.getSources(), weight.getSourceShapes())) {
          names.push_back(cast<StringAttr>(source).str());
          ArrayRef<int64_t> dims = cast<DenseI64ArrayAttr>(shape).asArrayRef();
          std::vector<int64_t> sourceShape(dims.begin(), dims.end());
          sources.push_back(plan::CreateWeightSourceDirect(fbb, names.back().c_str(), &sourceShape));
        }
        auto type = weight.getType();
        std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
        addFixedBuffer(weight, type, plan::BufferKind::parameter, int32_t(parameters.size()));
        parameters.push_back(plan::CreateParameterDirect(fbb, fusedName(names).c_str(),
                                                         planDType(type.getElementType()), &shape,
                                                         &sources, int32_t(weight.getAxis())));
      } else if (auto constant = dyn_cast<exec::ConstantOp>(op)) {
        auto type = constant.getType();
        auto dense = dyn_cast<DenseElementsAttr>(constant.getValue());
        if (!dense || !type.getElementType().isF32())
          return constant.emitOpError("only dense f32 constants can be emitted");
        std::vector<uint8_t> bytes;
        for (float value : dense.getValues<float>()) {
          uint8_t raw[4];
          std::memcpy(raw, &value, 4);
          bytes.insert(bytes.end(), raw, raw + 4);
        }
        std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
        addFixedBuffer(constant, type, plan::BufferKind::constant, int32_t(constants.size()));
        fbb.ForceVectorAlignment(bytes.size(), 1, 16);
        auto data = fbb.CreateVector(bytes);
        constants.push_back(plan::CreateConstant(fbb, plan::DType::f32, fbb.CreateVector(shape), data));
      } else if (auto kv = dyn_cast<exec::KvCacheOp>(op)) {
        int32_t layer = int32_t(kv.getLayer());
        addBuffer(kv.getKeys(), plan::BufferKind::kv_keys, "", layer, plan::RowCount::fixed, 1,
                  kvDtype);
        addBuffer(kv.getValues(), plan::BufferKind::kv_values, "", layer, plan::RowCount::fixed, 1,
                  kvDtype);
      } else if (auto alloc = dyn_cast<exec::AllocOp>(op)) {
        if (!alloc.getOffset())
          return alloc.emitOpError("has no offset: run llm-plan-memory before emission");
        addBuffer(alloc, alloc.getType(), plan::BufferKind::workspace, "", int64_t(*alloc.getOffset()));
      } else if (auto launch = dyn_cast<exec::LaunchOp>(op)) {
        std::vector<int32_t> args;
        for (Value arg : launch.getArgs())
          args.push_back(bufferIndex.at(arg));
        std::vector<plan::Scalar> scalars;
        for (Attribute scalar : launch.getScalars()) {
          if (auto f = dyn_cast<FloatAttr>(scalar))
            scalars.emplace_back(plan::ScalarKind::f32, float(f.getValueAsDouble()), 0);
          else if (auto i = dyn_cast<IntegerAttr>(scalar))
            scalars.emplace_back(plan::ScalarKind::i32, 0.0f, int32_t(i.getInt()));
          else if (cast<StringAttr>(scalar).getValue() == "tokens")
            scalars.emplace_back(plan::ScalarKind::num_tokens, 0.0f, 0);
          else
            scalars.emplace_back(plan::ScalarKind::num_seqs, 0.0f, 0);
        }
        auto step = plan::CreateLaunchDirect(fbb, kernelIndex.at(launch.getKernel()), &args, &scalars);
        steps.push_back(plan::CreateStep(fbb, plan::StepOp::Launch, step.Union(), layerOf(op.getLoc())));
      } else if (auto gemm = dyn_cast<exec::GemmOp>(op)) {
        auto weightType = gemm.getWeight().getType();
        auto step = plan::CreateGemm(
            fbb, bufferIndex.at(gemm.getInput()), bufferIndex.at(gemm.getWeight()),
            gemm.getBias() ? bufferIndex.at(gemm.getBias()) : -1, bufferIndex.at(gemm.getOut()),
            weightType.getDimSize(0), weightType.getDimSize(1));
        steps.push_back(plan::CreateStep(fbb, plan::StepOp::Gemm, step.Union(), layerOf(op.getLoc())));
      } else if (auto output = dyn_cast<exec::OutputOp>(op)) {
        outputs.push_back(plan::CreateOutputDirect(fbb, output.getName().str().c_str(),
                                                   bufferIndex.at(output.getBuffer())));
      } else if (!isa<func::ReturnOp>(op)) {
        return op.emitOpError("cannot be emitted into a plan");
      }
    }

    auto perToken = func->getAttrOfType<IntegerAttr>("exec.workspace_bytes_per_token").getInt();
    auto perSeq = func->getAttrOfType<IntegerAttr>("exec.workspace_bytes_per_seq").getInt();
    ranks.push_back(plan::CreateRankProgramDirect(fbb, 0, 0, 0, &parameters, &constants, &buffers,
                                                  &steps, &outputs, perToken, perSeq));
    return success();
  }

  ModuleOp module;
  const EmitOptions &options;
  plan::DType kvDtype = plan::DType::f32;
  fb::FlatBufferBuilder fbb{1 << 20};
  std::vector<fb::Offset<plan::KernelModule>> kernels;
  std::vector<fb::Offset<plan::RankProgram>> ranks;
  std::vector<fb::Offset<plan::Buffer>> buffers;
  llvm::StringMap<int32_t> kernelIndex;
  DenseMap<Value, int32_t> bufferIndex;
};

} // namespace

FailureOr<std::vector<uint8_t>> emitPlan(ModuleOp module, const EmitOptions &options) {
  return Emitter(module, options).run();
}

} // namespace llmc
