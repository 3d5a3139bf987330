#include "runtime/serve/OpenAi.h"

#include <cmath>
#include <filesystem>
#include <fstream>

namespace llmc::serve {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char *typeOf(int status) {
  switch (status) {
  case 401: return "authentication_error";
  case 404: return "not_found_error";
  case 429: return "rate_limit_error";
  default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

[[noreturn]] void bad(const std::string &param, const std::string &message) {
  throw ApiError(400, message, param);
}

// Optional typed fields: absent or null gives nullopt; the wrong type or a
// value out of range is a 400 naming the field.
std::optional<double> number(const json &body, const char *key, double low, double high) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null())
    return std::nullopt;
  if (!it->is_number())
    bad(key, std::string("'") + key + "' must be a number");
  const double value = it->get<double>();
  if (!(value >= low && value <= high))
    bad(key, std::string("'") + key + "' must be in [" + json(low).dump() + ", " + json(high).dump() +
                 "], got " + it->dump());
  return value;
}

std::optional<int64_t> integer(const json &body, const char *key, int64_t low, int64_t high) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null())
    return std::nullopt;
  if (!it->is_number_integer())
    bad(key, std::string("'") + key + "' must be an integer");
  const int64_t value = it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX)
                            ? INT64_MAX
                            : it->get<int64_t>();
  if (value < low || value > high)
    bad(key, std::string("'") + key + "' must be in [" + std::to_string(low) + ", " + std::to_string(high) +
                 "], got " + it->dump());
  return value;
}

std::optional<bool> boolean(const json &body, const char *key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null())
    return std::nullopt;
  if (!it->is_boolean())
    bad(key, std::string("'") + key + "' must be a boolean");
  return it->get<bool>();
}

std::vector<int32_t> tokenIds(const json &value, const char *param, int64_t vocab) {
  std::vector<int32_t> ids;
  for (const json &id : value) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab)
      bad(param, std::string("'") + param + "' token ids must be integers in [0, " + std::to_string(vocab) +
                     "), got " + id.dump());
    ids.push_back(id.get<int32_t>());
  }
  return ids;
}

std::string tokenString(const json &value) {
  if (value.is_string())
    return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  return {};
}

} // namespace

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : std::runtime_error(std::move(message)), status(status), type(typeOf(status)), param(std::move(param)),
      code(std::move(code)) {}

json errorBody(const ApiError &error) {
  return {{"error",
           {{"message", error.what()},
            {"type", error.type},
            {"param", error.param.empty() ? json(nullptr) : json(error.param)},
            {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
}

std::string dumpJson(const json &value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

ServedModel ServedModel::load(const std::string &engine_dir, const std::string &name, int64_t max_seq_len,
                              int64_t vocab_size, const runtime::GenerationConfig &generation) {
  ServedModel model;
  model.name = name;
  model.max_seq_len = max_seq_len;
  model.vocab_size = vocab_size;
  model.generation = generation;
  const fs::path dir(engine_dir);
  if (fs::exists(dir / "tokenizer.json"))
    model.tokenizer = text::Tokenizer::fromFile((dir / "tokenizer.json").string());
  const fs::path configPath = dir / "tokenizer_config.json";
  if (std::ifstream file(configPath); file) {
    nlohmann::ordered_json config = nlohmann::ordered_json::parse(file, nullptr, false);
    if (config.is_object()) {
      if (config.contains("chat_template") && !config["chat_template"].is_null())
        model.chat_template = text::ChatTemplate::fromTokenizerConfig(config, configPath.string());
      for (const char *key : {"bos_token", "eos_token", "pad_token", "unk_token"})
        if (config.contains(key))
          model.special_tokens[key] = tokenString(json(config[key]));
      // Llama 3 puts <|begin_of_text|> before text; Qwen2 declares no BOS.
      const std::string bos = config.contains("bos_token") ? tokenString(json(config["bos_token"])) : "";
      const bool addBos = !config.contains("add_bos_token") || config["add_bos_token"] != false;
      if (!bos.empty() && addBos && model.tokenizer)
        model.bos_token_id = model.tokenizer->tokenId(bos);
    }
  }
  return model;
}

std::vector<int32_t> ServedModel::textPrompt(const std::string &text, bool add_special_tokens) const {
  if (!tokenizer)
    bad("prompt", "the engine has no tokenizer.json: give the prompt as token ids");
  std::vector<int32_t> ids;
  if (add_special_tokens && bos_token_id)
    ids.push_back(*bos_token_id);
  std::vector<int32_t> encoded = tokenizer->encode(text);
  ids.insert(ids.end(), encoded.begin(), encoded.end());
  return ids;
}

std::vector<int32_t> ServedModel::chatPrompt(const json &body) const {
  if (!tokenizer || !chat_template)
    throw ApiError(400, "the engine has no chat template (tokenizer_config.json): use /v1/completions", "messages");
  auto messages = body.find("messages");
  if (messages == body.end() || !messages->is_array() || messages->empty())
    bad("messages", "'messages' must be a non-empty array");
  nlohmann::ordered_json context = special_tokens;
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const json &message : *messages) {
    if (!message.is_object() || !message.contains("role") || !message["role"].is_string())
      bad("messages", "each message must be an object with a string 'role'");
    nlohmann::ordered_json entry = nlohmann::ordered_json(message);
    // Content parts [{type: "text", text}] join into one string.
    if (message.contains("content") && message["content"].is_array()) {
      std::string joined;
      for (const json &part : message["content"]) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
          bad("messages", "only text content parts are supported");
        joined += part["text"].get<std::string>();
      }
      entry["content"] = joined;
    } else if (message.contains("content") && !message["content"].is_string() && !message["content"].is_null()) {
      bad("messages", "'content' must be a string, an array of text parts or null");
    }
    list.push_back(std::move(entry));
  }
  context["messages"] = std::move(list);
  context["add_generation_prompt"] = boolean(body, "add_generation_prompt").value_or(true);
  if (auto tools = body.find("tools"); tools != body.end() && !tools->is_null()) {
    if (!tools->is_array())
      bad("tools", "'tools' must be an array");
    context["tools"] = nlohmann::ordered_json(*tools);
  }
  if (auto kwargs = body.find("chat_template_kwargs"); kwargs != body.end() && kwargs->is_object())
    for (const auto &[key, value] : kwargs->items())
      context[key] = nlohmann::ordered_json(value);
  std::string rendered;
  try {
    rendered = chat_template->render(context);
  } catch (const std::exception &error) {
    bad("messages", std::string("the chat template rejected the messages: ") + error.what());
  }
  return tokenizer->encode(rendered);
}

std::string ServedModel::tokenText(int32_t token) const {
  return tokenizer ? std::string(tokenizer->tokenBytes(token)) : std::to_string(token);
}

std::vector<runtime::GenerationRequest> CompletionJob::requests() const {
  std::vector<runtime::GenerationRequest> all;
  for (const std::vector<int32_t> &prompt : prompts)
    for (int i = 0; i < n; ++i) {
      runtime::GenerationRequest request = base;
      request.prompt = prompt;
      if (request.sampling.seed)
        request.sampling.seed = *request.sampling.seed + uint64_t(i);  // n choices differ
      all.push_back(std::move(request));
    }
  return all;
}

CompletionJob parseCompletion(const json &body, const ServedModel &model, bool chat) {
  if (!body.is_object())
    bad("", "the request body must be a JSON object");
  if (auto name = body.find("model"); name != body.end() && !name->is_null()) {
    if (!name->is_string())
      bad("model", "'model' must be a string");
    if (name->get<std::string>() != model.name)
      throw ApiError(404, "The model '" + name->get<std::string>() + "' does not exist (this server has '" +
                              model.name + "')",
                     "model", "model_not_found");
  }
  CompletionJob job;
  job.chat = chat;
  job.stream = boolean(body, "stream").value_or(false);
  if (auto options = body.find("stream_options"); options != body.end() && !options->is_null()) {
    if (!options->is_object())
      bad("stream_options", "'stream_options' must be an object");
    if (!job.stream)
      bad("stream_options", "'stream_options' is only allowed with stream: true");
    job.include_usage = boolean(*options, "include_usage").value_or(false);
  }
  job.n = int(integer(body, "n", 1, 16).value_or(1));
  if (auto bestOf = integer(body, "best_of", 1, 16); bestOf && *bestOf != job.n)
    bad("best_of", "'best_of' other than n is not supported");

  // Prompts.
  if (chat) {
    job.prompts.push_back(model.chatPrompt(body));
  } else {
    auto prompt = body.find("prompt");
    if (prompt == body.end() || prompt->is_null())
      bad("prompt", "'prompt' is required");
    const bool special = boolean(body, "add_special_tokens").value_or(true);
    if (prompt->is_string()) {
      job.prompts.push_back(model.textPrompt(prompt->get<std::string>(), special));
    } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()) {
      job.prompts.push_back(tokenIds(*prompt, "prompt", model.vocab_size));
    } else if (prompt->is_array() && !prompt->empty()) {
      for (const json &item : *prompt) {
        if (item.is_string())
          job.prompts.push_back(model.textPrompt(item.get<std::string>(), special));
        else if (item.is_array())
          job.prompts.push_back(tokenIds(item, "prompt", model.vocab_size));
        else
          bad("prompt", "'prompt' must be a string, an array of strings, token ids or arrays of token ids");
      }
    } else {
      bad("prompt", "'prompt' must be a non-empty string or array");
    }
    if (job.prompts.size() * size_t(job.n) > 64)
      bad("prompt", "at most 64 prompts x n per request");
    job.echo = boolean(body, "echo").value_or(false);
    if (job.echo && !model.tokenizer)
      bad("echo", "'echo' needs the engine's tokenizer.json");
    if (auto suffix = body.find("suffix"); suffix != body.end() && !suffix->is_null())
      bad("suffix", "'suffix' is not supported");
  }
  for (const auto &prompt : job.prompts)
    if (prompt.empty())
      bad(chat ? "messages" : "prompt", "the prompt is empty");

  // Lengths: the prompt plus max_tokens must fit the context.
  std::optional<int64_t> maxTokens = integer(body, "max_completion_tokens", 1, INT32_MAX);
  if (!maxTokens)
    maxTokens = integer(body, "max_tokens", 1, INT32_MAX);
  size_t longest = 0;
  for (const auto &prompt : job.prompts)
    longest = std::max(longest, prompt.size());
  const int64_t room = model.max_seq_len - int64_t(longest);
  const int64_t wanted = maxTokens.value_or(chat ? std::max<int64_t>(room, 1) : 16);
  if (int64_t(longest) + wanted > model.max_seq_len)
    throw ApiError(400,
                   "This model's maximum context length is " + std::to_string(model.max_seq_len) +
                       " tokens. However, you requested " + std::to_string(int64_t(longest) + wanted) +
                       " tokens (" + std::to_string(longest) + " in the " + (chat ? "messages" : "prompt") + ", " +
                       std::to_string(wanted) + " in the completion). Please reduce the length of the " +
                       (chat ? "messages" : "prompt") + " or completion.",
                   chat ? "messages" : "prompt", "context_length_exceeded");
  runtime::GenerationRequest &base = job.base;
  base.max_tokens = int(wanted);
  base.min_tokens = int(integer(body, "min_tokens", 0, wanted).value_or(0));

  // Sampling: the request's values, else the model's generation_config.json.
  sample::SamplingParams &sampling = base.sampling;
  sampling = model.generation.sampling;
  if (auto t = number(body, "temperature", 0, 2))
    sampling.temperature = float(*t);
  if (auto p = number(body, "top_p", 0, 1)) {
    if (*p == 0)
      bad("top_p", "'top_p' must be in (0, 1]");
    sampling.top_p = float(*p);
  }
  if (auto k = integer(body, "top_k", -1, INT32_MAX))
    sampling.top_k = int(*k);
  if (auto p = number(body, "min_p", 0, 1))
    sampling.min_p = float(*p);
  if (auto seed = integer(body, "seed", INT64_MIN, INT64_MAX))
    sampling.seed = uint64_t(*seed);
  if (auto p = number(body, "presence_penalty", -2, 2))
    sampling.presence_penalty = float(*p);
  if (auto p = number(body, "frequency_penalty", -2, 2))
    sampling.frequency_penalty = float(*p);
  if (auto p = number(body, "repetition_penalty", 0, 2)) {
    if (*p == 0)
      bad("repetition_penalty", "'repetition_penalty' must be in (0, 2]");
    sampling.repetition_penalty = float(*p);
  }
  if (chat) {
    job.logprobs = boolean(body, "logprobs").value_or(false);
    job.top_logprobs = int(integer(body, "top_logprobs", 0, 20).value_or(0));
    if (job.top_logprobs > 0 && !job.logprobs)
      bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  } else if (auto n = integer(body, "logprobs", 0, 20)) {
    job.logprobs = true;
    job.top_logprobs = int(*n);
  }
  sampling.logprobs = job.top_logprobs;

  // Stop conditions.
  base.ignore_eos = boolean(body, "ignore_eos").value_or(false);
  if (auto stop = body.find("stop"); stop != body.end() && !stop->is_null()) {
    const json list = stop->is_string() ? json::array({*stop}) : *stop;
    if (!list.is_array() || list.size() > 16)
      bad("stop", "'stop' must be a string or an array of at most 16 strings");
    for (const json &s : list) {
      if (!s.is_string() || s.get<std::string>().empty())
        bad("stop", "'stop' strings must be non-empty strings");
      base.stop.push_back(s.get<std::string>());
    }
    if (!model.tokenizer)
      bad("stop", "stop strings need the engine's tokenizer.json");
  }
  if (auto ids = body.find("stop_token_ids"); ids != body.end() && !ids->is_null()) {
    if (!ids->is_array())
      bad("stop_token_ids", "'stop_token_ids' must be an array of token ids");
    base.stop_token_ids = tokenIds(*ids, "stop_token_ids", model.vocab_size);
  }
  if (auto user = body.find("user"); user != body.end() && !user->is_null() && !user->is_string())
    bad("user", "'user' must be a string");
  try {
    sample::validate(sampling, int(model.vocab_size));
  } catch (const std::invalid_argument &error) {
    bad("", error.what());
  }
  return job;
}

json choiceLogprobs(const ServedModel &model, bool chat, const std::vector<sample::SampleResult> &samples,
                    size_t text_offset) {
  auto bytesOf = [](const std::string &text) {
    json bytes = json::array();
    for (unsigned char c : text)
      bytes.push_back(int(c));
    return bytes;
  };
  auto logprob = [](float value) { return std::isfinite(value) ? json(value) : json(-9999.0); };
  if (chat) {
    json content = json::array();
    for (const sample::SampleResult &s : samples) {
      const std::string text = model.tokenText(s.token);
      json top = json::array();
      for (const sample::TokenLogprob &t : s.top) {
        const std::string topText = model.tokenText(t.token);
        top.push_back({{"token", topText}, {"logprob", logprob(t.logprob)}, {"bytes", bytesOf(topText)}});
      }
      content.push_back({{"token", text}, {"logprob", logprob(s.logprob)}, {"bytes", bytesOf(text)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), tokenLogprobs = json::array(), topLogprobs = json::array(),
       offsets = json::array();
  for (const sample::SampleResult &s : samples) {
    const std::string text = model.tokenText(s.token);
    tokens.push_back(text);
    tokenLogprobs.push_back(logprob(s.logprob));
    json top = json::object();
    for (const sample::TokenLogprob &t : s.top)
      top[model.tokenText(t.token)] = logprob(t.logprob);
    topLogprobs.push_back(top);
    offsets.push_back(text_offset);
    text_offset += text.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", tokenLogprobs}, {"top_logprobs", topLogprobs},
          {"text_offset", offsets}};
}

} // namespace llmc::serve
