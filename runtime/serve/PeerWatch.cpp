#include "runtime/serve/PeerWatch.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <set>
#include <vector>

namespace llmc::serve {
namespace {

// "address:port" of a connected socket's peer, as httplib writes it in
// Request::remote_addr and remote_port; empty for anything else.
std::string peerOf(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (getpeername(fd, reinterpret_cast<sockaddr *>(&address), &length) != 0)
    return {};
  char text[INET6_ADDRSTRLEN] = {};
  int port = 0;
  if (address.ss_family == AF_INET) {
    auto *v4 = reinterpret_cast<sockaddr_in *>(&address);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    port = ntohs(v4->sin_port);
  } else if (address.ss_family == AF_INET6) {
    auto *v6 = reinterpret_cast<sockaddr_in6 *>(&address);
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    port = ntohs(v6->sin6_port);
  } else {
    return {};
  }
  return std::string(text) + ":" + std::to_string(port);
}

// The peers of this process's sockets that have hung up.
std::set<std::string> closedPeers() {
  std::set<std::string> closed;
  DIR *dir = opendir("/proc/self/fd");
  if (!dir)
    return closed;
  while (dirent *entry = readdir(dir)) {
    char *end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    struct stat info {};
    if (*end != '\0' || fd == dirfd(dir) || fstat(int(fd), &info) != 0 || !S_ISSOCK(info.st_mode))
      continue;
    pollfd probe{int(fd), POLLRDHUP, 0};
    if (poll(&probe, 1, 0) == 1 && (probe.revents & (POLLRDHUP | POLLHUP | POLLERR)))
      if (std::string peer = peerOf(int(fd)); !peer.empty())
        closed.insert(peer);
  }
  closedir(dir);
  return closed;
}

} // namespace

PeerWatch::PeerWatch() : thread_([this] { loop(); }) {}

PeerWatch::~PeerWatch() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::shared_ptr<PeerWatch::Watch> PeerWatch::watch(const std::string &address, int port, std::function<void()> gone) {
  std::lock_guard lock(mutex_);
  const uint64_t id = nextId_++;
  watched_[id] = {address + ":" + std::to_string(port), std::move(gone)};
  return std::make_shared<Watch>(*this, id);
}

void PeerWatch::unwatch(uint64_t id) {
  std::lock_guard lock(mutex_);
  watched_.erase(id);
}

void PeerWatch::loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::milliseconds(100));
    if (stopping_ || watched_.empty())
      continue;
    lock.unlock();
    const std::set<std::string> closed = closedPeers();
    lock.lock();
    std::vector<std::function<void()>> calls;
    for (auto it = watched_.begin(); it != watched_.end();)
      if (closed.count(it->second.peer)) {
        calls.push_back(std::move(it->second.gone));
        it = watched_.erase(it);
      } else {
        ++it;
      }
    lock.unlock();
    for (auto &call : calls)
      call();
    lock.lock();
  }
}

} // namespace llmc::serve
