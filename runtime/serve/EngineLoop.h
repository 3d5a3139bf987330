// The engine thread's loop and the channels that carry its output to the
// HTTP handlers.
//
// HTTP handler threads submit groups of requests (one per choice of an API
// request) and read their tokens from the group's Channel; the loop thread
// alone touches the Scheduler (and with it the Executor and its device
// context): between forwards it admits what was submitted and drops what
// was cancelled; then it launches the next forward, hands the last
// forward's updates to their channels while the device computes, and
// collects the new updates. (Where a launch runs the whole forward, on the
// CPU backend, the updates go out before it, or every token would wait a
// forward.)
#pragma once

#include "runtime/sched/Scheduler.h"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace llmc::serve {

/// The queue is full (HTTP 429).
class Overloaded : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// One API request's updates, each tagged with its request's index in the group.
class Channel {
public:
  struct Item {
    size_t index;
    runtime::SequenceUpdate update;
  };

  explicit Channel(size_t size) : unfinished_(size) {}
  /// Waits up to `timeout` for updates and takes them all (empty on timeout).
  std::vector<Item> take(std::chrono::milliseconds timeout);
  bool finished() const;

private:
  friend class EngineLoop;
  void push(Item item);

  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Item> items_;
  size_t unfinished_;
};

/// What the loop last saw (for /metrics), read without blocking a forward.
struct LoopStats {
  size_t waiting = 0, running = 0;
  int32_t kv_pages = 0, kv_pages_used = 0, kv_pages_cached = 0;
  runtime::SchedulerCounters counters;
  double forward_seconds = 0;  // Executor::forwardSeconds()
  // From each forward's collected results to the next forward's launch,
  // while work was waiting: time the device idles for host work.
  double host_seconds_between_forwards = 0;
};

class EngineLoop {
public:
  /// `max_waiting`: requests that may wait for admission at once; more are refused.
  EngineLoop(runtime::Scheduler &scheduler, runtime::BlockManager &pages, size_t max_waiting);

  /// Validates and queues the requests, all or none. Throws
  /// std::invalid_argument for a bad request, Overloaded when the queue is full.
  std::shared_ptr<Channel> submit(std::vector<runtime::GenerationRequest> requests,
                                  const runtime::Executor &executor);
  /// Drops the group's unfinished requests (their pages return before the next forward).
  void cancel(const std::shared_ptr<Channel> &channel);

  /// Runs until stop(); on the thread that owns the executor's device context.
  void run();
  void stop();

  LoopStats stats() const;

private:
  struct Submitted {
    std::shared_ptr<Channel> channel;
    std::vector<runtime::GenerationRequest> requests;
  };
  struct Member {
    std::shared_ptr<Channel> channel;
    size_t index;
  };
  /// Waits until there is something to do and takes what was submitted
  /// and cancelled; false once stop() was called (everything then failed).
  bool waitForWork(std::vector<Submitted> &submitted, std::vector<std::shared_ptr<Channel>> &cancelled);
  void admit(std::vector<Submitted> &submitted);
  void dropCancelled(const std::vector<std::shared_ptr<Channel>> &cancelled);
  /// Launches the next forward, hands out the last one's updates (while the
  /// device computes, or before the launch where it runs the whole forward)
  /// and collects the new ones into pending_.
  void runForward();
  void publishStats();
  void deliver(std::vector<runtime::SequenceUpdate> updates);
  /// Adds the gap from the last collected forward to the one just launched.
  void countHostGap();

  runtime::Scheduler &scheduler_;
  runtime::BlockManager &pages_;
  const size_t maxWaiting_;

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  std::vector<Submitted> inbox_;
  size_t inboxRequests_ = 0;
  std::vector<std::shared_ptr<Channel>> cancelled_;
  bool stopping_ = false;
  LoopStats stats_;

  // The loop thread's own.
  std::unordered_map<uint64_t, Member> members_;  // scheduler id -> channel
  std::vector<runtime::SequenceUpdate> pending_;  // the last forward's, not handed out yet
  // When the last forward's results were collected (none after the loop
  // waited for work), and the gaps to the next launches counted so far.
  std::optional<std::chrono::steady_clock::time_point> collectedAt_;
  double hostSecondsBetweenForwards_ = 0;
};

} // namespace llmc::serve
