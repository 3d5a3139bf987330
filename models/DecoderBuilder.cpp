// Builds the llm IR of a Llama/Qwen2 decoder from its config. This is the
// only place that knows the layer order and checkpoint tensor names.

#include "models/DecoderBuilder.h"

#include "dialects/llm/LlmDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/SaveAndRestore.h"

#include <cmath>
#include <map>

namespace llmc::models {
namespace {

using namespace mlir;

class DecoderBuilder {
public:
  DecoderBuilder(MLIRContext &context, const DecoderConfig &config, Type dtype)
      : config(config), builder(&context), dtype(dtype), loc(builder.getUnknownLoc()) {}

  OwningOpRef<ModuleOp> build(const BuildOptions &options, int64_t maxSeqLen) {
    OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
    module->getOperation()->setAttr("llm.model", modelAttributes(options, maxSeqLen));
    builder.setInsertionPointToEnd(module->getBody());

    auto ids = RankedTensorType::get({ShapedType::kDynamic}, builder.getI32Type());
    auto logitsType = activation(config.vocab_size, builder.getF32Type());
    auto func = func::FuncOp::create(builder, loc, "forward",
                                     builder.getFunctionType({ids, ids}, {logitsType}));
    Block *body = func.addEntryBlock();
    builder.setInsertionPointToStart(body);
    Value tokenIds = body->getArgument(0);
    positions = body->getArgument(1);

    // Ops carry the name of the model part they belong to (see decoderLayer).
    Location modelLoc = loc;
    loc = NameLoc::get(builder.getStringAttr("model.embed_tokens"));
    Value hidden = llm::EmbeddingOp::create(builder, loc, activation(config.hidden_size),
                                            param("model.embed_tokens.weight",
                                                  {config.vocab_size, config.hidden_size}),
                                            tokenIds);
    for (int64_t layer = 0; layer < config.num_layers; ++layer)
      hidden = decoderLayer(layer, hidden);
    loc = NameLoc::get(builder.getStringAttr("model.norm"));
    Value normed = rmsNorm(hidden, "model.norm.weight");
    std::string head = config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    Value logits = llm::LogitsOp::create(builder, loc, logitsType, normed,
                                         param(head, {config.vocab_size, config.hidden_size}));
    func::ReturnOp::create(builder, loc, logits);
    loc = modelLoc;
    return module;
  }

private:
  RankedTensorType activation(int64_t columns, Type elementType = {}) {
    return RankedTensorType::get({ShapedType::kDynamic, columns},
                                 elementType ? elementType : dtype);
  }

  // Parameters are created once, at the top of the function, in first-use order.
  Value param(const std::string &name, ArrayRef<int64_t> shape) {
    auto [it, inserted] = params.try_emplace(name, Value());
    if (inserted) {
      OpBuilder::InsertionGuard guard(builder);
      if (lastParam)
        builder.setInsertionPointAfter(lastParam);
      else
        builder.setInsertionPointToStart(positions.getParentBlock());
      auto op = llm::ParamOp::create(builder, loc, RankedTensorType::get(shape, dtype), name);
      lastParam = op;
      it->second = op;
    }
    return it->second;
  }

  Value rmsNorm(Value input, const std::string &weight) {
    return llm::RmsNormOp::create(builder, loc, input.getType(), input,
                                  param(weight, {config.hidden_size}),
                                  builder.getF64FloatAttr(config.rms_norm_eps));
  }

  Value linear(Value input, const std::string &prefix, int64_t out, int64_t in, bool bias) {
    Value b = bias ? param(prefix + ".bias", {out}) : Value();
    return llm::LinearOp::create(builder, loc, activation(out), input,
                                 param(prefix + ".weight", {out, in}), b);
  }

  Value decoderLayer(int64_t layer, Value hidden) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    // Ops of this layer carry its name; fusion keeps it and the plan records
    // each step's layer from it.
    llvm::SaveAndRestore<Location> layerLoc(
        loc, NameLoc::get(builder.getStringAttr("model.layers." + std::to_string(layer))));
    const int64_t h = config.hidden_size, hd = config.head_dim;
    const int64_t q = config.num_heads * hd, kv = config.num_kv_heads * hd;

    Value x = rmsNorm(hidden, prefix + "input_layernorm.weight");
    Value query = linear(x, prefix + "self_attn.q_proj", q, h, config.qkv_bias);
    Value key = linear(x, prefix + "self_attn.k_proj", kv, h, config.qkv_bias);
    Value value = linear(x, prefix + "self_attn.v_proj", kv, h, config.qkv_bias);
    auto rope = ropeAttr();
    query = llm::RopeOp::create(builder, loc, query.getType(), query, positions,
                                config.num_heads, hd, rope);
    key = llm::RopeOp::create(builder, loc, key.getType(), key, positions, config.num_kv_heads,
                              hd, rope);
    Value attention = llm::AttentionOp::create(
        builder, loc, activation(q), query, key, value, uint64_t(layer), uint64_t(config.num_heads),
        uint64_t(config.num_kv_heads), uint64_t(hd), llvm::APFloat(1.0 / std::sqrt(double(hd))),
        uint64_t(config.sliding_window[layer]));
    Value attentionOut = linear(attention, prefix + "self_attn.o_proj", h, q, config.o_bias);
    hidden = llm::AddOp::create(builder, loc, hidden, attentionOut);

    x = rmsNorm(hidden, prefix + "post_attention_layernorm.weight");
    const int64_t inter = config.intermediate_size;
    Value gate = linear(x, prefix + "mlp.gate_proj", inter, h, config.mlp_bias);
    Value up = linear(x, prefix + "mlp.up_proj", inter, h, config.mlp_bias);
    Value act = llm::SiluMulOp::create(builder, loc, gate, up);
    Value down = linear(act, prefix + "mlp.down_proj", h, inter, config.mlp_bias);
    return llm::AddOp::create(builder, loc, hidden, down);
  }

  llm::RopeAttr ropeAttr() {
    const RopeConfig &r = config.rope;
    return llm::RopeAttr::get(builder.getContext(), llvm::APFloat(r.theta), r.rotary_dim,
                              r.scaling, llvm::APFloat(r.factor), llvm::APFloat(r.low_freq_factor),
                              llvm::APFloat(r.high_freq_factor), r.original_max_positions);
  }

  DictionaryAttr modelAttributes(const BuildOptions &options, int64_t maxSeqLen) {
    SmallVector<NamedAttribute> attrs = {
        builder.getNamedAttr("architecture", builder.getStringAttr(config.architecture)),
        builder.getNamedAttr("family", builder.getStringAttr(config.family)),
        builder.getNamedAttr("vocab_size", builder.getI64IntegerAttr(config.vocab_size)),
        builder.getNamedAttr("hidden_size", builder.getI64IntegerAttr(config.hidden_size)),
        builder.getNamedAttr("num_layers", builder.getI64IntegerAttr(config.num_layers)),
        builder.getNamedAttr("num_heads", builder.getI64IntegerAttr(config.num_heads)),
        builder.getNamedAttr("num_kv_heads", builder.getI64IntegerAttr(config.num_kv_heads)),
        builder.getNamedAttr("head_dim", builder.getI64IntegerAttr(config.head_dim)),
        builder.getNamedAttr("max_seq_len", builder.getI64IntegerAttr(maxSeqLen)),
        builder.getNamedAttr("kv_page_size", builder.getI64IntegerAttr(options.kv_page_size)),
        builder.getNamedAttr("dtype", TypeAttr::get(dtype)),
        builder.getNamedAttr("eos_token_ids", builder.getDenseI64ArrayAttr(config.eos_token_ids)),
    };
    if (config.bos_token_id)
      attrs.push_back(builder.getNamedAttr("bos_token_id", builder.getI64IntegerAttr(*config.bos_token_id)));
    return builder.getDictionaryAttr(attrs);
  }

  const DecoderConfig &config;
  OpBuilder builder;
  Type dtype;
  Location loc;
  Value positions;
  std::map<std::string, Value> params;
  Operation *lastParam = nullptr;
};

} // namespace

OwningOpRef<ModuleOp> buildDecoder(MLIRContext &context, const DecoderConfig &config,
                                   const BuildOptions &options) {
  context.loadDialect<llm::LlmDialect, func::FuncDialect>();
  std::string dtypeName = options.dtype.empty() ? config.dtype : options.dtype;
  Builder types(&context);
  Type dtype = dtypeName == "bf16"  ? Type(types.getBF16Type())
               : dtypeName == "f16" ? Type(types.getF16Type())
               : dtypeName == "f32" ? Type(types.getF32Type())
                                    : Type();
  if (!dtype)
    throw ConfigError("unsupported --dtype '" + dtypeName + "' (supported: bf16, f16, f32)");
  if (options.kv_page_size <= 0 || options.kv_page_size > 4096)
    throw ConfigError("--kv-page-size must be in [1, 4096]");
  int64_t maxSeqLen = options.max_seq_len ? options.max_seq_len : config.max_position_embeddings;
  if (maxSeqLen <= 0 || maxSeqLen > config.max_position_embeddings)
    throw ConfigError("--max-seq-len " + std::to_string(maxSeqLen) +
                      " must be in [1, max_position_embeddings = " +
                      std::to_string(config.max_position_embeddings) + "]");
  return DecoderBuilder(context, config, dtype).build(options, maxSeqLen);
}

} // namespace llmc::models
