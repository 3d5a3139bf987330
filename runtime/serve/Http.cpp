#include "runtime/serve/Http.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace llmc::serve {
namespace {

const char *reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 413: return "Payload Too Large";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  default: return "Status";
  }
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return text;
}

std::string trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
    text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r'))
    text.remove_suffix(1);
  return std::string(text);
}

std::string head(int status, std::string_view content_type,
                 const std::vector<std::pair<std::string, std::string>> &headers, bool keep_alive) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) + "\r\n";
  if (!keep_alive)
    out += "Connection: close\r\n";
  if (!content_type.empty())
    out += "Content-Type: " + std::string(content_type) + "\r\n";
  for (const auto &[name, value] : headers)
    out += name + ": " + value + "\r\n";
  return out;
}

// Writes everything unless the connection fails.
bool sendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    data.remove_prefix(size_t(n));
  }
  return true;
}

} // namespace

std::string HttpRequest::header(const std::string &lowercase_name) const {
  auto it = headers.find(lowercase_name);
  return it == headers.end() ? std::string() : it->second;
}

bool HttpRequest::clientGone() const {
  pollfd probe{socket, POLLIN | POLLRDHUP, 0};
  if (poll(&probe, 1, 0) != 1)
    return false;
  if (probe.revents & (POLLRDHUP | POLLHUP | POLLERR))
    return true;
  char byte;
  return recv(socket, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;  // 0: the peer closed
}

bool HttpResponder::writeAll(std::string_view data) {
  if (!failed_ && !sendAll(socket_, data))
    failed_ = true;
  return !failed_;
}

void HttpResponder::send(int status, std::string_view content_type, std::string_view body,
                         const std::vector<std::pair<std::string, std::string>> &headers) {
  if (sent_)
    throw std::logic_error("an HTTP response was sent twice");
  sent_ = true;
  status_ = status;
  std::string out = head(status, content_type, headers, keepAlive_) + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  if (!headOnly_)
    out += body;
  writeAll(out);
}

bool HttpResponder::start(int status, std::string_view content_type,
                          const std::vector<std::pair<std::string, std::string>> &headers) {
  if (sent_)
    throw std::logic_error("an HTTP response was sent twice");
  sent_ = streaming_ = true;
  status_ = status;
  return writeAll(head(status, content_type, headers, keepAlive_) + "Transfer-Encoding: chunked\r\n\r\n");
}

bool HttpResponder::write(std::string_view data) {
  if (!streaming_)
    throw std::logic_error("HttpResponder::write without start()");
  if (data.empty())
    return !failed_;
  char size[20];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  return writeAll(std::string(size) + std::string(data) + "\r\n");
}

void HttpResponder::end() {
  if (streaming_) {
    writeAll("0\r\n\r\n");
    streaming_ = false;
  }
}

HttpServer::HttpServer(HttpServerOptions options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() {
  stop();
  if (listener_ >= 0)
    close(listener_);
}

int HttpServer::bind(const std::string &host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo *found = nullptr;
  const std::string service = std::to_string(port);
  if (int error = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found); error != 0)
    throw std::runtime_error("cannot listen on " + host + ":" + service + ": " + gai_strerror(error));
  std::string why = "no address";
  for (addrinfo *a = found; a && listener_ < 0; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0)
      continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0)
      listener_ = fd;
    else {
      why = std::strerror(errno);
      close(fd);
    }
  }
  freeaddrinfo(found);
  if (listener_ < 0)
    throw std::runtime_error("cannot listen on " + host + ":" + service + ": " + why);
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  getsockname(listener_, reinterpret_cast<sockaddr *>(&bound), &length);
  return ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6 *>(&bound)->sin6_port
                                           : reinterpret_cast<sockaddr_in *>(&bound)->sin_port);
}

void HttpServer::run() {
  for (;;) {
    const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE))
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // out of descriptors: let connections end
    std::lock_guard lock(mutex_);
    for (std::thread &thread : finished_)
      thread.join();
    finished_.clear();
    if (stopping_) {
      if (fd >= 0)
        close(fd);
      break;
    }
    if (fd < 0)
      continue;  // EINTR, a connection reset before accept, out of descriptors: go on
    if (connections_.size() >= options_.max_connections) {
      HttpResponder busy(fd, false, /*keep_alive=*/false);
      protocolError(busy, 503, "too many connections");
      close(fd);
      continue;
    }
    connections_[fd] = std::thread([this, fd] {
      serveConnection(fd);
      std::lock_guard lock(mutex_);
      close(fd);
      auto self = connections_.find(fd);
      finished_.push_back(std::move(self->second));
      connections_.erase(self);
    });
  }
  // Every connection was shut down by stop(): wait for their threads.
  for (;;) {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mutex_);
      if (connections_.empty() && finished_.empty())
        return;
      threads.swap(finished_);
    }
    for (std::thread &thread : threads)
      thread.join();
    if (threads.empty())
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void HttpServer::stop() {
  std::lock_guard lock(mutex_);
  if (stopping_)
    return;
  stopping_ = true;
  if (listener_ >= 0)
    shutdown(listener_, SHUT_RDWR);  // accept() returns
  for (auto &[fd, thread] : connections_)
    shutdown(fd, SHUT_RDWR);  // reads and writes fail: the connection threads end
}

void HttpServer::protocolError(HttpResponder &responder, int status, const std::string &message) {
  responder.send(status, "application/json", options_.error_body ? options_.error_body(status, message) : message);
}

void HttpServer::serveConnection(int fd) {
  timeval timeout{options_.idle_timeout_seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  std::string buffer;  // received, not yet consumed
  char chunk[16384];
  auto receive = [&] {
    for (;;) {
      const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;  // closed, timed out or shut down
      buffer.append(chunk, size_t(n));
      return true;
    }
  };
  for (;;) {
    size_t headEnd;
    while ((headEnd = buffer.find("\r\n\r\n")) == std::string::npos && buffer.size() <= options_.max_header_bytes)
      if (!receive())
        return;
    if (headEnd == std::string::npos || headEnd > options_.max_header_bytes) {
      HttpResponder responder(fd, false, /*keep_alive=*/false);
      return protocolError(responder, 431, "the request head is too large");
    }
    HttpRequest request;
    request.socket = fd;
    HttpResponder bad(fd, false, /*keep_alive=*/false);
    // Request line: METHOD SP target SP HTTP/1.x
    const std::string_view text(buffer.data(), headEnd);
    const size_t lineEnd = std::min(text.find("\r\n"), text.size());
    const std::string_view line = text.substr(0, lineEnd);
    const size_t space1 = line.find(' '), space2 = line.rfind(' ');
    if (space1 == std::string::npos || space2 == space1 || line.substr(space2 + 1, 7) != "HTTP/1.")
      return protocolError(bad, 400, "malformed request line");
    request.method = std::string(line.substr(0, space1));
    const std::string target(line.substr(space1 + 1, space2 - space1 - 1));
    const bool http10 = line.substr(space2 + 1) == "HTTP/1.0";
    const size_t question = target.find('?');
    request.path = target.substr(0, question);
    request.query = question == std::string::npos ? "" : target.substr(question + 1);
    if (request.path.empty() || request.path[0] != '/')
      return protocolError(bad, 400, "malformed request target");
    for (size_t at = lineEnd + 2; at < text.size();) {
      const size_t end = std::min(text.find("\r\n", at), text.size());
      const std::string_view field = text.substr(at, end - at);
      const size_t colon = field.find(':');
      if (colon == std::string::npos || colon == 0)
        return protocolError(bad, 400, "malformed header line");
      request.headers[lower(std::string(field.substr(0, colon)))] = trim(field.substr(colon + 1));
      at = end + 2;
    }
    if (!request.header("transfer-encoding").empty())
      return protocolError(bad, 501, "chunked request bodies are not supported: send Content-Length");
    size_t length = 0;
    if (std::string value = request.header("content-length"); !value.empty()) {
      if (value.size() > 18 || value.find_first_not_of("0123456789") != std::string::npos)
        return protocolError(bad, 400, "malformed Content-Length");
      length = std::stoull(value);
    }
    if (length > options_.max_body_bytes)
      return protocolError(bad, 413, "the request body is larger than " + std::to_string(options_.max_body_bytes) +
                                         " bytes");
    const size_t bodyStart = headEnd + 4;
    if (lower(request.header("expect")) == "100-continue" && buffer.size() < bodyStart + length &&
        !sendAll(fd, "HTTP/1.1 100 Continue\r\n\r\n"))
      return;
    while (buffer.size() < bodyStart + length)
      if (!receive())
        return;
    request.body = buffer.substr(bodyStart, length);
    buffer.erase(0, bodyStart + length);

    const std::string connection = lower(request.header("connection"));
    const bool keepAlive = http10 ? connection == "keep-alive" : connection != "close";
    HttpResponder responder(fd, request.method == "HEAD", keepAlive);
    handler_(request, responder);
    if (!responder.sent())
      protocolError(responder, 500, "the handler sent no response");
    responder.end();
    if (responder.failed() || !keepAlive)
      return;
  }
}

} // namespace llmc::serve
