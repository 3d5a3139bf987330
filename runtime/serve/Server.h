// `llmrun serve`: the OpenAI-compatible HTTP server.
//
//   GET  /health, /metrics, /v1/models
//   POST /v1/completions, /v1/chat/completions (JSON or SSE streams)
//   POST /tokenize, /detokenize
//
// HTTP runs on its own threads (one per connection); the engine loop runs on
// the calling thread, which owns the executor's device context.
#pragma once

#include "runtime/serve/EngineLoop.h"
#include "runtime/serve/OpenAi.h"

#include <cstddef>
#include <functional>
#include <string>

namespace llmc::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (printed when listening)
  std::string api_key;  // non-empty: /v1 and /tokenize need "Authorization: Bearer <key>"
  size_t max_waiting_requests = 1024;    // more waiting at once get 429
  size_t max_request_bytes = 8u << 20;   // larger bodies get 413
  size_t max_connections = 1024;         // connections served at once (threads)
};

/// Serves until SIGINT or SIGTERM; `ready` is called with the port once listening.
/// Throws when the address cannot be bound.
void serve(const ServerOptions &options, const ServedModel &model, runtime::Executor &executor,
           EngineLoop &loop, const std::function<void(int port)> &ready);

} // namespace llmc::serve
