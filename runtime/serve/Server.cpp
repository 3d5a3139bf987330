#include "runtime/serve/Server.h"

#include "runtime/serve/Metrics.h"
#include "runtime/serve/PeerWatch.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <iostream>
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

void sendError(httplib::Response &res, const ApiError &error) {
  res.status = error.status;
  res.set_content(dumpJson(errorBody(error)), "application/json");
}

// One API request in flight: the job, its channel, and what each choice has
// produced so far. Builds the final response or the stream's chunks.
class Completion {
public:
  Completion(CompletionJob job, std::shared_ptr<Channel> channel, const ServedModel &model, Metrics &metrics,
             Clock::time_point arrival)
      : job_(std::move(job)), channel_(std::move(channel)), model_(model), metrics_(metrics), arrival_(arrival),
        id_(randomId(job_.chat ? "chatcmpl-" : "cmpl-")),
        created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                     .count()),
        choices_(job_.prompts.size() * size_t(job_.n)) {
    if (job_.echo)
      for (size_t c = 0; c < choices_.size(); ++c)
        choices_[c].text = model_.tokenizer->decode(job_.prompts[c / size_t(job_.n)]);
  }

  const std::shared_ptr<Channel> &channel() const { return channel_; }

  /// Applies updates; returns the (choice, new text, new samples) of each.
  struct Delta {
    size_t index;
    std::string text;
    std::vector<sample::SampleResult> samples;
    std::string finish_reason;  // when the choice finished
  };
  std::vector<Delta> absorb(std::vector<Channel::Item> items) {
    std::vector<Delta> deltas;
    for (Channel::Item &item : items) {
      Choice &choice = choices_[item.index];
      runtime::SequenceUpdate &update = item.update;
      Delta delta{item.index, update.text, {}, ""};
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
      if (delta.text.empty() && delta.samples.empty() && delta.finish_reason.empty() && choice.opened)
        continue;  // nothing new (text held back for a possible stop string)
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
  std::shared_ptr<Channel> channel_;
  const ServedModel &model_;
  Metrics &metrics_;
  Clock::time_point arrival_;
  std::string id_;
  int64_t created_;
  std::vector<Choice> choices_;
  bool firstToken_ = false;
  std::string error_;
};

json parseBody(const httplib::Request &req) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded())
    throw ApiError(400, "the request body is not valid JSON");
  if (!body.is_object())
    throw ApiError(400, "the request body must be a JSON object");
  return body;
}

// Which endpoint a path counts under in /metrics (unknown paths together).
std::string endpointOf(const std::string &path) {
  for (const char *known : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics",
                            "/tokenize", "/detokenize"})
    if (path == known)
      return known;
  return "other";
}

} // namespace

void serve(const ServerOptions &options, const ServedModel &model, runtime::Executor &executor, EngineLoop &loop,
           const std::function<void(int port)> &ready) {
  // SIGINT/SIGTERM go to one thread that stops the server and the loop.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that vanishes mid-write is a failed write, not a crash

  Metrics metrics;
  PeerWatch peers;
  httplib::Server server;
  server.new_task_queue = [&] { return new httplib::ThreadPool(options.max_connections); };
  server.set_payload_max_length(options.max_request_bytes);
  server.set_keep_alive_max_count(1000);
  server.set_read_timeout(60);
  server.set_write_timeout(60);

  server.set_pre_routing_handler([&](const httplib::Request &req, httplib::Response &res) {
    const bool open = req.path == "/health" || req.path == "/metrics";
    if (!options.api_key.empty() && !open && req.get_header_value("Authorization") != "Bearer " + options.api_key) {
      sendError(res, ApiError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')", "",
                              "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.set_error_handler([](const httplib::Request &req, httplib::Response &res) {
    if (!res.body.empty())
      return;
    if (res.status == 404)
      sendError(res, ApiError(404, "no such endpoint: " + req.method + " " + req.path));
    else if (res.status == 413)
      sendError(res, ApiError(413, "the request body is too large"));
    else if (res.status == 405)
      sendError(res, ApiError(405, "method not allowed: " + req.method + " " + req.path));
    else
      sendError(res, ApiError(res.status, "bad request"));
  });
  server.set_exception_handler([](const httplib::Request &, httplib::Response &res, std::exception_ptr error) {
    try {
      std::rethrow_exception(error);
    } catch (const ApiError &e) {
      sendError(res, e);
    } catch (const Overloaded &e) {
      sendError(res, ApiError(429, e.what(), "", "server_overloaded"));
    } catch (const std::invalid_argument &e) {
      sendError(res, ApiError(400, e.what()));
    } catch (const std::exception &e) {
      sendError(res, ApiError(500, e.what()));
    } catch (...) {
      sendError(res, ApiError(500, "unknown error"));
    }
  });
  server.set_logger([&](const httplib::Request &req, const httplib::Response &res) {
    metrics.countResponse(endpointOf(req.path), res.status);
  });

  server.Get("/health", [](const httplib::Request &, httplib::Response &res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  server.Get("/metrics", [&](const httplib::Request &, httplib::Response &res) {
    res.set_content(metrics.render(loop.stats()), "text/plain; version=0.0.4");
  });
  server.Get("/v1/models", [&](const httplib::Request &, httplib::Response &res) {
    json card = {{"id", model.name}, {"object", "model"}, {"created", 0}, {"owned_by", "llmc"},
                 {"max_model_len", model.max_seq_len}};
    res.set_content(dumpJson({{"object", "list"}, {"data", json::array({card})}}), "application/json");
  });

  server.Post("/tokenize", [&](const httplib::Request &req, httplib::Response &res) {
    json body = parseBody(req);
    std::vector<int32_t> tokens;
    if (body.contains("messages")) {
      tokens = model.chatPrompt(body);
    } else if (body.contains("prompt") && body["prompt"].is_string()) {
      auto special = body.find("add_special_tokens");
      tokens = model.textPrompt(body["prompt"].get<std::string>(),
                                special == body.end() || !special->is_boolean() || special->get<bool>());
    } else {
      throw ApiError(400, "give 'prompt' (a string) or 'messages'", "prompt");
    }
    res.set_content(dumpJson({{"tokens", tokens}, {"count", tokens.size()}, {"max_model_len", model.max_seq_len}}),
                    "application/json");
  });
  server.Post("/detokenize", [&](const httplib::Request &req, httplib::Response &res) {
    json body = parseBody(req);
    auto tokens = body.find("tokens");
    if (tokens == body.end() || !tokens->is_array())
      throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
    if (!model.tokenizer)
      throw ApiError(400, "the engine has no tokenizer.json", "tokens");
    std::vector<int32_t> ids;
    for (const json &id : *tokens) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= model.tokenizer->vocabSize())
        throw ApiError(400, "token id " + id.dump() + " is outside the vocabulary", "tokens");
      ids.push_back(id.get<int32_t>());
    }
    res.set_content(dumpJson({{"prompt", model.tokenizer->decode(ids)}}), "application/json");
  });

  auto complete = [&](const httplib::Request &req, httplib::Response &res, bool chat) {
    const Clock::time_point arrival = Clock::now();
    CompletionJob job = parseCompletion(parseBody(req), model, chat);
    const bool stream = job.stream;
    std::shared_ptr<Channel> channel = loop.submit(job.requests(), executor);
    auto completion = std::make_shared<Completion>(std::move(job), channel, model, metrics, arrival);
    // A client that hangs up cancels its request at once, whether or not a
    // write to it has failed yet.
    auto watch = peers.watch(req.remote_addr, req.remote_port, [channel] { channel->disconnect(); });
    const auto wait = std::chrono::milliseconds(100);

    if (!stream) {
      while (!channel->finished()) {
        completion->absorb(channel->take(wait));
        if (channel->disconnected()) {
          loop.cancel(channel);
          res.status = 499;  // the client has gone; nothing is sent
          return;
        }
      }
      completion->recordFinished();
      if (!completion->error().empty())
        throw ApiError(500, completion->error());
      res.set_content(dumpJson(completion->response()), "application/json");
      return;
    }

    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [completion, watch, &loop](size_t, httplib::DataSink &sink) {
          const std::shared_ptr<Channel> &channel = completion->channel();
          std::string out = completion->events(completion->absorb(channel->take(std::chrono::milliseconds(100))));
          if (channel->disconnected() || (!out.empty() && !sink.write(out.data(), out.size())))
            return false;  // the releaser cancels the request
          if (channel->finished()) {
            completion->recordFinished();
            const std::string closing = completion->closingEvents();
            if (!sink.write(closing.data(), closing.size()))
              return false;
            sink.done();
          }
          return true;
        },
        [completion, &loop](bool success) {
          if (!success || !completion->channel()->finished())
            loop.cancel(completion->channel());
        });
  };
  server.Post("/v1/completions",
              [&](const httplib::Request &req, httplib::Response &res) { complete(req, res, false); });
  server.Post("/v1/chat/completions",
              [&](const httplib::Request &req, httplib::Response &res) { complete(req, res, true); });

  const int port = options.port == 0 ? server.bind_to_any_port(options.host)
                                     : (server.bind_to_port(options.host, options.port) ? options.port : -1);
  if (port < 0)
    throw std::runtime_error("cannot listen on " + options.host + ":" + std::to_string(options.port) +
                             " (in use, or not an address of this machine)");
  std::thread http([&] { server.listen_after_bind(); });
  std::thread stopper([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    loop.stop();  // fails what is in flight, so that every handler returns
    server.stop();
  });
  ready(port);
  loop.run();  // until a signal stops it
  http.join();
  stopper.join();
}

} // namespace llmc::serve
