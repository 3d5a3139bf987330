// A small HTTP/1.1 server: what the OpenAI API needs and no more.
//
// One thread per connection (keep-alive, pipelining-safe: requests on a
// connection are answered in order), request bodies by Content-Length up to
// a size limit, responses whole or streamed with chunked transfer encoding.
// Because the server owns its sockets, a handler can ask whether its client
// has hung up while it waits for tokens.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace llmc::serve {

struct HttpRequest {
  std::string method, path, query;  // path without the query string
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  int socket = -1;

  std::string header(const std::string &lowercase_name) const;
  /// The client has closed the connection (or reset it): nobody reads the answer.
  bool clientGone() const;
};

class HttpResponder {
public:
  /// `keep_alive` false: the response says "Connection: close".
  HttpResponder(int socket, bool head_only, bool keep_alive)
      : socket_(socket), headOnly_(head_only), keepAlive_(keep_alive) {}

  /// A whole response.
  void send(int status, std::string_view content_type, std::string_view body,
            const std::vector<std::pair<std::string, std::string>> &headers = {});
  /// Starts a chunked response; then write() pieces and end().
  bool start(int status, std::string_view content_type,
             const std::vector<std::pair<std::string, std::string>> &headers = {});
  /// False once the client cannot be written to.
  bool write(std::string_view data);
  void end();

  bool sent() const { return sent_; }
  bool failed() const { return failed_; }
  int status() const { return status_; }

private:
  bool writeAll(std::string_view data);

  int socket_;
  bool headOnly_, keepAlive_;
  bool sent_ = false, streaming_ = false, failed_ = false;
  int status_ = 0;
};

struct HttpServerOptions {
  size_t max_body_bytes = 8u << 20;  // larger bodies: 413
  size_t max_header_bytes = 64u << 10;  // larger heads: 431
  size_t max_connections = 1024;      // more at once: 503
  int idle_timeout_seconds = 60;      // a connection silent this long is closed
  /// The body of an error the server itself answers (400, 404, 413, ...).
  std::function<std::string(int status, const std::string &message)> error_body;
};

class HttpServer {
public:
  using Handler = std::function<void(const HttpRequest &, HttpResponder &)>;

  HttpServer(HttpServerOptions options, Handler handler);
  ~HttpServer();

  /// Binds host:port (port 0: any free port) and returns the port; throws when it cannot.
  int bind(const std::string &host, int port);
  /// Accepts connections until stop(); each is served on its own thread.
  void run();
  /// Stops accepting, closes every connection and waits for their threads.
  void stop();

private:
  void serveConnection(int socket);
  void protocolError(HttpResponder &responder, int status, const std::string &message);

  HttpServerOptions options_;
  Handler handler_;
  int listener_ = -1;
  std::mutex mutex_;
  bool stopping_ = false;
  std::map<int, std::thread> connections_;  // socket -> its thread
  std::vector<std::thread> finished_;       // threads whose connection has ended, to join
};

} // namespace llmc::serve
