// Notices clients that close their connection while their request waits for
// tokens, so that the request's KV pages return at once.
//
// The HTTP library hands handlers the peer's address but not the socket, so a
// watcher thread looks at this process's sockets a few times a second (only
// while some request is watched): a socket whose peer is watched and that has
// seen the peer's FIN or a reset belongs to a client that has gone.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace llmc::serve {

class PeerWatch {
public:
  PeerWatch();
  ~PeerWatch();

  /// Calls `gone` (once, on the watcher thread) when the connection from
  /// address:port closes, until the Watch that watch() returns is destroyed.
  class Watch {
  public:
    Watch(PeerWatch &owner, uint64_t id) : owner_(owner), id_(id) {}
    ~Watch() { owner_.unwatch(id_); }
    Watch(const Watch &) = delete;
    Watch &operator=(const Watch &) = delete;

  private:
    PeerWatch &owner_;
    uint64_t id_;
  };
  std::shared_ptr<Watch> watch(const std::string &address, int port, std::function<void()> gone);

private:
  struct Entry {
    std::string peer;  // "address:port"
    std::function<void()> gone;
  };
  void unwatch(uint64_t id);
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<uint64_t, Entry> watched_;
  uint64_t nextId_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

} // namespace llmc::serve
