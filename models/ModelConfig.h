// The model facts llmc reads from a Hugging Face config.json.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmc::models {

/// A config.json that llmc cannot compile; the message names the field.
class ConfigError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

struct RopeConfig {
  double theta = 10000.0;
  int64_t rotary_dim = 0;
  std::string scaling = "none";  // "none" or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_positions = 0;
};

/// A decoder-only transformer of the Llama / Qwen2 shape.
struct DecoderConfig {
  std::string architecture;  // LlamaForCausalLM or Qwen2ForCausalLM
  std::string family;        // llama or qwen2
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q/k/v projections have biases (Qwen2, Llama attention_bias)
  bool o_bias = false;    // o_proj has a bias (Llama attention_bias)
  bool mlp_bias = false;  // gate/up/down have biases (Llama mlp_bias)
  /// Sliding-window size per layer (0: full attention).
  std::vector<int64_t> sliding_window;
  std::string dtype;  // checkpoint dtype: bf16, f16 or f32
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
};

/// Parses config.json text; `source` names the file in error messages.
DecoderConfig parseDecoderConfig(const std::string &json, const std::string &source);

/// Reads and parses MODEL_DIR/config.json.
DecoderConfig loadDecoderConfig(const std::string &model_dir);

} // namespace llmc::models
