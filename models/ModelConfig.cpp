// config.json -> DecoderConfig, with a clear error for anything unsupported.

#include "models/ModelConfig.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace llmc::models {
namespace {

using json = nlohmann::json;

class Reader {
public:
  Reader(const json &root, std::string source) : root(root), source(std::move(source)) {}

  [[noreturn]] void fail(const std::string &message) const {
    throw ConfigError(source + ": " + message);
  }

  const json *find(const json &object, const std::string &key) const {
    auto it = object.find(key);
    return it == object.end() || it->is_null() ? nullptr : &*it;
  }

  // Sizes are bounded so that every product the compiler and the runtime
  // form stays far from overflow (the runtime's plan verifier has the same bound).
  static constexpr int64_t kMaxSize = int64_t(1) << 24;

  int64_t integer(const json &object, const std::string &key, const std::string &path, int64_t lo,
                  int64_t hi) const {
    const json *value = find(object, key);
    if (!value)
      fail("missing field '" + path + "'");
    if (!value->is_number_integer() || value->get<int64_t>() < lo || value->get<int64_t>() > hi)
      fail("field '" + path + "' must be an integer in [" + std::to_string(lo) + ", " +
           std::to_string(hi) + "], got " + value->dump());
    return value->get<int64_t>();
  }
  int64_t positiveInt(const json &object, const std::string &key, const std::string &path) const {
    return integer(object, key, path, 1, kMaxSize);
  }
  int64_t positiveInt(const std::string &key) const { return positiveInt(root, key, key); }

  double positiveNumber(const json &object, const std::string &key, const std::string &path,
                        std::optional<double> fallback = std::nullopt) const {
    const json *value = find(object, key);
    if (!value) {
      if (fallback)
        return *fallback;
      fail("missing field '" + path + "'");
    }
    if (!value->is_number() || !(value->get<double>() > 0) || !std::isfinite(value->get<double>()))
      fail("field '" + path + "' must be a positive number, got " + value->dump());
    return value->get<double>();
  }

  bool flag(const std::string &key, bool fallback) const {
    const json *value = find(root, key);
    if (!value)
      return fallback;
    if (!value->is_boolean())
      fail("field '" + key + "' must be true or false, got " + value->dump());
    return value->get<bool>();
  }

  std::string string(const std::string &key, const std::string &fallback) const {
    const json *value = find(root, key);
    if (!value)
      return fallback;
    if (!value->is_string())
      fail("field '" + key + "' must be a string, got " + value->dump());
    return value->get<std::string>();
  }

  std::vector<int64_t> tokenIds(const std::string &key) const {
    const json *value = find(root, key);
    if (!value)
      return {};
    std::vector<int64_t> ids;
    for (const json &id : value->is_array() ? *value : json::array({*value})) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0)
        fail("field '" + key + "' must be a token id or a list of token ids, got " + value->dump());
      ids.push_back(id.get<int64_t>());
    }
    return ids;
  }

  const json &root;
  std::string source;
};

std::string parseDtype(const Reader &reader) {
  // transformers 5 writes "dtype"; earlier versions "torch_dtype".
  std::string dtype = reader.string("dtype", reader.string("torch_dtype", "float32"));
  if (dtype == "bfloat16") return "bf16";
  if (dtype == "float16") return "f16";
  if (dtype == "float32") return "f32";
  reader.fail("unsupported dtype '" + dtype + "' (supported: bfloat16, float16, float32)");
}

RopeConfig parseRope(const Reader &reader, int64_t head_dim) {
  // transformers 5 keeps everything in "rope_parameters"; earlier configs use
  // "rope_theta" plus an optional "rope_scaling" object.
  const json *parameters = reader.find(reader.root, "rope_parameters");
  std::string path = parameters ? "rope_parameters" : "rope_scaling";
  const json *scaling = parameters ? parameters : reader.find(reader.root, "rope_scaling");
  if (scaling && !scaling->is_object())
    reader.fail("field '" + path + "' must be an object or null");

  RopeConfig rope;
  rope.theta = parameters ? reader.positiveNumber(*parameters, "rope_theta", path + ".rope_theta")
                          : reader.positiveNumber(reader.root, "rope_theta", "rope_theta", 10000.0);
  double partial = reader.positiveNumber(reader.root, "partial_rotary_factor",
                                         "partial_rotary_factor", 1.0);
  rope.rotary_dim = int64_t(std::llround(double(head_dim) * partial));
  if (rope.rotary_dim <= 0 || rope.rotary_dim > head_dim || rope.rotary_dim % 2 != 0)
    reader.fail("field 'partial_rotary_factor' gives rotary dimension " +
                std::to_string(rope.rotary_dim) + " for head_dim " + std::to_string(head_dim));
  if (!scaling)
    return rope;

  std::string type;
  for (const char *key : {"rope_type", "type"})
    if (const json *value = reader.find(*scaling, key); value && value->is_string())
      type = value->get<std::string>();
  if (type.empty() || type == "default")
    return rope;
  if (type != "llama3")
    reader.fail("unsupported rope type '" + type + "' in field '" + path +
                ".rope_type' (supported: default, llama3)");
  rope.scaling = "llama3";
  rope.factor = reader.positiveNumber(*scaling, "factor", path + ".factor");
  rope.low_freq_factor = reader.positiveNumber(*scaling, "low_freq_factor", path + ".low_freq_factor");
  rope.high_freq_factor =
      reader.positiveNumber(*scaling, "high_freq_factor", path + ".high_freq_factor");
  rope.original_max_positions = reader.positiveInt(*scaling, "original_max_position_embeddings",
                                                   path + ".original_max_position_embeddings");
  if (!(rope.high_freq_factor > rope.low_freq_factor))
    reader.fail("field '" + path + ".high_freq_factor' must exceed low_freq_factor");
  return rope;
}

} // namespace

DecoderConfig parseDecoderConfig(const std::string &text, const std::string &source) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    throw ConfigError(source + ": not valid JSON");
  if (!root.is_object())
    throw ConfigError(source + ": expected a JSON object");
  Reader reader(root, source);

  DecoderConfig config;
  const json *architectures = reader.find(root, "architectures");
  if (!architectures || !architectures->is_array() || architectures->size() != 1 ||
      !(*architectures)[0].is_string())
    reader.fail("field 'architectures' must list exactly one architecture");
  config.architecture = (*architectures)[0].get<std::string>();
  if (config.architecture == "LlamaForCausalLM") {
    config.family = "llama";
  } else if (config.architecture == "Qwen2ForCausalLM") {
    config.family = "qwen2";
  } else {
    reader.fail("unsupported architecture '" + config.architecture +
                "' in field 'architectures' (supported: LlamaForCausalLM, Qwen2ForCausalLM)");
  }

  config.vocab_size = reader.positiveInt("vocab_size");
  config.hidden_size = reader.positiveInt("hidden_size");
  config.intermediate_size = reader.positiveInt("intermediate_size");
  config.num_layers = reader.integer(root, "num_hidden_layers", "num_hidden_layers", 1, 4096);
  config.num_heads = reader.positiveInt("num_attention_heads");
  config.num_kv_heads = reader.find(root, "num_key_value_heads")
                            ? reader.positiveInt("num_key_value_heads")
                            : config.num_heads;
  if (config.num_heads % config.num_kv_heads != 0)
    reader.fail("field 'num_attention_heads' (" + std::to_string(config.num_heads) +
                ") must be a multiple of 'num_key_value_heads' (" +
                std::to_string(config.num_kv_heads) + ")");
  if (reader.find(root, "head_dim")) {
    config.head_dim = reader.positiveInt("head_dim");
  } else {
    if (config.hidden_size % config.num_heads != 0)
      reader.fail("field 'hidden_size' must be a multiple of 'num_attention_heads' when "
                  "'head_dim' is absent");
    config.head_dim = config.hidden_size / config.num_heads;
  }
  config.max_position_embeddings = reader.positiveInt("max_position_embeddings");
  config.rms_norm_eps = reader.positiveNumber(root, "rms_norm_eps", "rms_norm_eps");
  config.rope = parseRope(reader, config.head_dim);
  config.tie_word_embeddings = reader.flag("tie_word_embeddings", false);

  std::string activation = reader.string("hidden_act", "silu");
  if (activation != "silu")
    reader.fail("unsupported activation '" + activation + "' in field 'hidden_act' (supported: silu)");

  if (config.family == "qwen2") {
    config.qkv_bias = true;
  } else {
    config.qkv_bias = config.o_bias = reader.flag("attention_bias", false);
    config.mlp_bias = reader.flag("mlp_bias", false);
  }

  // Qwen2: layers from max_window_layers on use the sliding window when
  // use_sliding_window is set (Hugging Face's layer_types rule; its default
  // max_window_layers is 28).
  config.sliding_window.assign(config.num_layers, 0);
  if (config.family == "qwen2" && reader.flag("use_sliding_window", false)) {
    int64_t window = reader.positiveInt("sliding_window");
    int64_t first = reader.find(root, "max_window_layers")
                        ? reader.integer(root, "max_window_layers", "max_window_layers", 0, 4096)
                        : 28;
    for (int64_t layer = first; layer < config.num_layers; ++layer)
      config.sliding_window[layer] = window;
  }

  config.dtype = parseDtype(reader);
  if (auto bos = reader.tokenIds("bos_token_id"); !bos.empty())
    config.bos_token_id = bos.front();
  config.eos_token_ids = reader.tokenIds("eos_token_id");
  for (int64_t id : config.eos_token_ids)
    if (id >= config.vocab_size)
      reader.fail("field 'eos_token_id' holds " + std::to_string(id) + ", outside the vocabulary");
  return config;
}

DecoderConfig loadDecoderConfig(const std::string &model_dir) {
  std::filesystem::path path = std::filesystem::path(model_dir) / "config.json";
  std::ifstream file(path);
  if (!file)
    throw ConfigError(path.string() + ": cannot read (is '" + model_dir + "' a model directory?)");
  std::stringstream text;
  text << file.rdbuf();
  return parseDecoderConfig(text.str(), path.string());
}

} // namespace llmc::models
