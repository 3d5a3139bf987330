#include "runtime/serve/Server.h"

#include "runtime/serve/Http.h"
#include "runtime/serve/Metrics.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <map>
#include <pthread.h>
#include <random>
#include <thread>

namespace llmc::serve {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string randomId(const char *prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx",
                static_cast<unsigned long long>((salt + counter++) * 0x9E3779B97F4A7C15ull));
  return std::string(prefix) + hex;
}

// One API request in flight: the job and what each choice has produced so
// far. Builds the final response or the stream's chunks.
class Completion {
public:
  Completion(CompletionJob job, const ServedModel &model, Metrics &metrics, Clock::time_point arrival)
      : job_(std::move(job)), model_(model), metrics_(metrics), arrival_(arrival),
        id_(randomId(job_.chat ? "chatcmpl-" : "cmpl-")),
        created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                     .count()),
        choices_(job_.prompts.size() * size_t(job_.n)) {
    if (job_.echo)
      for (size_t c = 0; c < choices_.size(); ++c)
        choices_[c].text = model_.tokenizer->decode(job_.prompts[c / size_t(job_.n)]);
  }

  /// Applies updates; returns the (choice, new text, new samples) of each.
  struct Delta {
    size_t index;
    std::string text;
    std::vector<sample::SampleResult> samples;
    std::string finish_reason;  // when the choice finished
    bool sampled = false;       // a token came
  };
  std::vector<Delta> absorb(std::vector<Channel::Item> items) {
    std::vector<Delta> deltas;
    for (Channel::Item &item : items) {
      Choice &choice = choices_[item.index];
      runtime::SequenceUpdate &update = item.update;
      Delta delta{item.index, update.text, {}, "", update.sample.has_value()};
      if (update.sample) {
        const Clock::time_point now = Clock::now();
        if (!firstToken_) {
          firstToken_ = true;
          metrics_.observeTimeToFirstToken(std::chrono::duration<double>(now - arrival_).count());
        }
        if (choice.tokens > 0)
          metrics_.observeInterTokenLatency(std::chrono::duration<double>(now - choice.last).count());
        choice.last = now;
        ++choice.tokens;
        if (job_.logprobs)
          delta.samples.push_back(*update.sample);
      }
      choice.text += update.text;
      choice.cached = update.cached_tokens;
      if (job_.logprobs)
        choice.samples.insert(choice.samples.end(), delta.samples.begin(), delta.samples.end());
      if (update.finished) {
        choice.finish_reason = delta.finish_reason = update.finish_reason;
        if (update.finish_reason == "error")
          error_ = update.error;
      }
      deltas.push_back(std::move(delta));
    }
    return deltas;
  }

  const std::string &error() const { return error_; }

  json usage() const {
    int64_t prompt = 0, completion = 0, cached = 0;
    for (size_t p = 0; p < job_.prompts.size(); ++p) {
      prompt += int64_t(job_.prompts[p].size());
      cached += choices_[p * size_t(job_.n)].cached;
    }
    for (const Choice &choice : choices_)
      completion += choice.tokens;
    return {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion},
            {"prompt_tokens_details", {{"cached_tokens", cached}}}};
  }

  void recordFinished() {
    const json counts = usage();
    metrics_.countTokens(counts["prompt_tokens"].get<int64_t>(), counts["completion_tokens"].get<int64_t>());
    metrics_.observeRequestLatency(secondsSince(arrival_));
  }

  json response() const {
    json choices = json::array();
    for (size_t c = 0; c < choices_.size(); ++c) {
      const Choice &choice = choices_[c];
      json entry = {{"index", c}, {"finish_reason", choice.finish_reason}};
      entry["logprobs"] = job_.logprobs ? choiceLogprobs(model_, job_.chat, choice.samples, 0) : json(nullptr);
      if (job_.chat)
        entry["message"] = {{"role", "assistant"}, {"content", choice.text}};
      else
        entry["text"] = choice.text;
      choices.push_back(std::move(entry));
    }
    return {{"id", id_},         {"object", job_.chat ? "chat.completion" : "text_completion"},
            {"created", created_}, {"model", model_.name},
            {"choices", choices}, {"usage", usage()}};
  }

  /// The SSE events for these deltas (the chat stream opens each choice with its role).
  std::string events(const std::vector<Delta> &deltas) {
    std::string out;
    for (const Delta &delta : deltas) {
      Choice &choice = choices_[delta.index];
      json entry = {{"index", delta.index}};
      if (job_.chat) {
        json message = json::object();
        if (!choice.opened)
          message["role"] = "assistant";
        if (!delta.text.empty() || !choice.opened)
          message["content"] = delta.text;
        entry["delta"] = message;
      } else {
        entry["text"] = (!choice.opened && job_.echo ? choices_[delta.index].text.substr(
                                                           0, choice.text.size() - delta.text.size())
                                                     : std::string()) +
                        delta.text;
      }
      // Nothing new: text held back (a possible stop string, an incomplete
      // UTF-8 sequence). Without a tokenizer there is never text, and each
      // token still gets its event.
      if (delta.text.empty() && delta.samples.empty() && delta.finish_reason.empty() && choice.opened &&
          (model_.tokenizer || !delta.sampled))
        continue;
      choice.opened = true;
      entry["logprobs"] = job_.logprobs && !delta.samples.empty()
                              ? choiceLogprobs(model_, job_.chat, delta.samples, choice.offset)
                              : json(nullptr);
      for (const sample::SampleResult &s : delta.samples)
        choice.offset += model_.tokenText(s.token).size();
      entry["finish_reason"] = delta.finish_reason.empty() || delta.finish_reason == "error"
                                   ? json(nullptr)
                                   : json(delta.finish_reason);
      out += event(chunk(json::array({entry})));
    }
    return out;
  }

  std::string closingEvents() const {
    std::string out;
    if (!error_.empty())
      out += event(errorBody(ApiError(500, error_)));
    if (job_.include_usage) {
      json last = chunk(json::array());
      last["usage"] = usage();
      out += event(last);
    }
    return out + "data: [DONE]\n\n";
  }

private:
  struct Choice {
    std::string text;
    int64_t tokens = 0, cached = 0;
    std::vector<sample::SampleResult> samples;
    std::string finish_reason;
    Clock::time_point last;
    bool opened = false;  // a chunk of it has been sent
    size_t offset = 0;    // text_offset of the next token (completions logprobs)
  };

  json chunk(json choices) const {
    return {{"id", id_},
            {"object", job_.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created_},
            {"model", model_.name},
            {"choices", std::move(choices)}};
  }
  static std::string event(const json &data) { return "data: " + dumpJson(data) + "\n\n"; }

  CompletionJob job_;
  const ServedModel &model_;
  Metrics &metrics_;
  Clock::time_point arrival_;
  std::string id_;
  int64_t created_;
  std::vector<Choice> choices_;
  bool firstToken_ = false;
  std::string error_;
};

json parseBody(const HttpRequest &req) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded())
    throw ApiError(400, "the request body is not valid JSON");
  if (!body.is_object())
    throw ApiError(400, "the request body must be a JSON object");
  return body;
}

void sendJson(HttpResponder &res, const json &value, int status = 200) {
  res.send(status, "application/json", dumpJson(value));
}

// The API's endpoints; the HTTP server calls handle() on connection threads.
class Api {
public:
  Api(const ServerOptions &options, const ServedModel &model, runtime::Executor &executor, EngineLoop &loop)
      : options_(options), model_(model), executor_(executor), loop_(loop) {}

  void handle(const HttpRequest &req, HttpResponder &res) {
    const std::string endpoint = route(req, res);
    metrics_.countResponse(endpoint, res.status());
  }

private:
  using Handler = void (Api::*)(const HttpRequest &, HttpResponder &);

  // Runs the endpoint's handler; returns the endpoint's name for /metrics.
  std::string route(const HttpRequest &req, HttpResponder &res) {
    static const std::map<std::string, std::pair<std::string, Handler>> routes = {
        {"/health", {"GET", &Api::health}},
        {"/metrics", {"GET", &Api::metrics}},
        {"/v1/models", {"GET", &Api::models}},
        {"/v1/completions", {"POST", &Api::completions}},
        {"/v1/chat/completions", {"POST", &Api::chatCompletions}},
        {"/tokenize", {"POST", &Api::tokenize}},
        {"/detokenize", {"POST", &Api::detokenize}},
    };
    auto route = routes.find(req.path);
    try {
      if (route == routes.end())
        throw ApiError(404, "no such endpoint: " + req.method + " " + req.path);
      const bool open = req.path == "/health" || req.path == "/metrics";
      if (!options_.api_key.empty() && !open && req.header("authorization") != "Bearer " + options_.api_key)
        throw ApiError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')", "", "invalid_api_key");
      const bool head = req.method == "HEAD" && route->second.first == "GET";
      if (req.method != route->second.first && !head)
        throw ApiError(405, "use " + route->second.first + " for " + req.path);
      (this->*route->second.second)(req, res);
    } catch (const ApiError &error) {
      respondWithError(res, error);
    } catch (const Overloaded &error) {
      respondWithError(res, ApiError(429, error.what(), "", "server_overloaded"));
    } catch (const std::invalid_argument &error) {
      respondWithError(res, ApiError(400, error.what()));
    } catch (const std::exception &error) {
      respondWithError(res, ApiError(500, error.what()));
    }
    return route == routes.end() ? "other" : route->first;
  }

  static void respondWithError(HttpResponder &res, const ApiError &error) {
    if (!res.sent())
      sendJson(res, errorBody(error), error.status);
    // A stream that has started reports its error in the stream itself.
  }

  void health(const HttpRequest &, HttpResponder &res) { sendJson(res, {{"status", "ok"}}); }

  void metrics(const HttpRequest &, HttpResponder &res) {
    res.send(200, "text/plain; version=0.0.4", metrics_.render(loop_.stats()));
  }

  void models(const HttpRequest &, HttpResponder &res) {
    json card = {{"id", model_.name}, {"object", "model"}, {"created", 0}, {"owned_by", "llmc"},
                 {"max_model_len", model_.max_seq_len}};
    sendJson(res, {{"object", "list"}, {"data", json::array({card})}});
  }

  void tokenize(const HttpRequest &req, HttpResponder &res) {
    json body = parseBody(req);
    std::vector<int32_t> tokens;
    if (body.contains("messages")) {
      tokens = model_.chatPrompt(body);
    } else if (body.contains("prompt") && body["prompt"].is_string()) {
      auto special = body.find("add_special_tokens");
      tokens = model_.textPrompt(body["prompt"].get<std::string>(),
                                 special == body.end() || !special->is_boolean() || special->get<bool>());
    } else {
      throw ApiError(400, "give 'prompt' (a string) or 'messages'", "prompt");
    }
    sendJson(res, {{"tokens", tokens}, {"count", tokens.size()}, {"max_model_len", model_.max_seq_len}});
  }

  void detokenize(const HttpRequest &req, HttpResponder &res) {
    json body = parseBody(req);
    auto tokens = body.find("tokens");
    if (tokens == body.end() || !tokens->is_array())
      throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
    if (!model_.tokenizer)
      throw ApiError(400, "the engine has no tokenizer.json", "tokens");
    std::vector<int32_t> ids;
    for (const json &id : *tokens) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= model_.tokenizer->vocabSize())
        throw ApiError(400, "token id " + id.dump() + " is outside the vocabulary", "tokens");
      ids.push_back(id.get<int32_t>());
    }
    sendJson(res, {{"prompt", model_.tokenizer->decode(ids)}});
  }

  void completions(const HttpRequest &req, HttpResponder &res) { complete(req, res, false); }
  void chatCompletions(const HttpRequest &req, HttpResponder &res) { complete(req, res, true); }

  void complete(const HttpRequest &req, HttpResponder &res, bool chat) {
    const Clock::time_point arrival = Clock::now();
    CompletionJob job = parseCompletion(parseBody(req), model_, chat);
    const bool stream = job.stream;
    std::shared_ptr<Channel> channel = loop_.submit(job.requests(), executor_);
    Completion completion(std::move(job), model_, metrics_, arrival);
    // However the handler leaves, a request that has not finished is
    // cancelled: its pages return before the next forward.
    struct CancelUnfinished {
      EngineLoop &loop;
      const std::shared_ptr<Channel> &channel;
      ~CancelUnfinished() {
        if (!channel->finished())
          loop.cancel(channel);
      }
    } cancelUnfinished{loop_, channel};
    const auto wait = std::chrono::milliseconds(50);

    if (!stream) {
      while (!channel->finished()) {
        completion.absorb(channel->take(wait));
        if (req.clientGone())
          return res.send(499, "application/json", "");  // nobody reads it
      }
      completion.recordFinished();
      if (!completion.error().empty())
        throw ApiError(500, completion.error());
      return sendJson(res, completion.response());
    }
    if (!res.start(200, "text/event-stream", {{"Cache-Control", "no-cache"}}))
      return;
    while (!channel->finished()) {
      const std::string events = completion.events(completion.absorb(channel->take(wait)));
      if (req.clientGone() || !res.write(events))
        return;
    }
    completion.recordFinished();
    res.write(completion.closingEvents());
    res.end();
  }

  const ServerOptions &options_;
  const ServedModel &model_;
  runtime::Executor &executor_;
  EngineLoop &loop_;
  Metrics metrics_;
};

} // namespace

void serve(const ServerOptions &options, const ServedModel &model, runtime::Executor &executor, EngineLoop &loop,
           const std::function<void(int port)> &ready) {
  // SIGINT/SIGTERM go to one thread, which stops the loop and the server.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Api api(options, model, executor, loop);
  HttpServerOptions http;
  http.max_body_bytes = options.max_request_bytes;
  http.max_connections = options.max_connections;
  http.error_body = [](int status, const std::string &message) { return dumpJson(errorBody(ApiError(status, message))); };
  HttpServer server(http, [&](const HttpRequest &req, HttpResponder &res) { api.handle(req, res); });
  const int port = server.bind(options.host, options.port);

  std::thread httpThread([&] { server.run(); });
  std::thread stopper([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    loop.stop();  // fails what is in flight, so that every handler returns
    server.stop();
  });
  ready(port);
  loop.run();
  httpThread.join();
  stopper.join();
}

} // namespace llmc::serve
