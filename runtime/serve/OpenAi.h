// The OpenAI API's request and response shapes: parsing and validating
// /v1/completions and /v1/chat/completions bodies into generation requests,
// building responses and stream chunks, and errors in OpenAI's JSON shape.
#pragma once

#include "runtime/engine/GenerationConfig.h"
#include "runtime/sched/Scheduler.h"
#include "runtime/text/ChatTemplate.h"
#include "runtime/text/Tokenizer.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmc::serve {

/// An error the client receives as {"error": {message, type, param, code}}.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = {}, std::string code = {});
  int status;
  std::string type, param, code;
};
nlohmann::json errorBody(const ApiError &error);

/// What the API needs to know about the served model.
struct ServedModel {
  std::string name;  // the `model` requests name
  int64_t max_seq_len = 0;
  int64_t vocab_size = 0;
  runtime::GenerationConfig generation;
  std::optional<text::Tokenizer> tokenizer;
  std::optional<text::ChatTemplate> chat_template;
  nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object();  // bos_token, eos_token for templates
  std::optional<int32_t> bos_token_id;  // put before text prompts of /v1/completions

  /// Reads tokenizer.json, tokenizer_config.json and generation_config.json
  /// from the engine directory (a missing tokenizer means token-id prompts only).
  static ServedModel load(const std::string &engine_dir, const std::string &name, int64_t max_seq_len,
                          int64_t vocab_size, const runtime::GenerationConfig &generation);

  /// The prompt of a chat request: the template rendered and encoded.
  std::vector<int32_t> chatPrompt(const nlohmann::json &body) const;
  /// A text prompt of /v1/completions or /tokenize.
  std::vector<int32_t> textPrompt(const std::string &text, bool add_special_tokens) const;
  /// A token's text for logprobs (bytes that are not UTF-8 on their own show as U+FFFD).
  std::string tokenText(int32_t token) const;
};

/// One /v1/completions or /v1/chat/completions request.
struct CompletionJob {
  bool chat = false;
  bool stream = false, include_usage = false;
  int n = 1;
  std::vector<std::vector<int32_t>> prompts;  // chat: one; completions: one per prompt
  runtime::GenerationRequest base;            // all but the prompt
  bool logprobs = false;
  int top_logprobs = 0;
  bool echo = false;  // completions: the prompt's text comes first in each choice

  /// The scheduler requests: prompts x n, choice index = prompt * n + i.
  std::vector<runtime::GenerationRequest> requests() const;
};

/// Throws ApiError (400 for bad values, 404 for another model).
CompletionJob parseCompletion(const nlohmann::json &body, const ServedModel &model, bool chat);

/// The logprobs of one choice so far, in the endpoint's shape.
nlohmann::json choiceLogprobs(const ServedModel &model, bool chat,
                              const std::vector<sample::SampleResult> &samples, size_t text_offset);

/// Strict JSON output: invalid UTF-8 (never produced on purpose) is replaced.
std::string dumpJson(const nlohmann::json &value);

} // namespace llmc::serve
