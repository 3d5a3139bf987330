#include "runtime/serve/EngineLoop.h"

#include <algorithm>

namespace llmc::serve {
namespace {

// A request that ended before producing anything.
runtime::SequenceUpdate failure(const std::string &message) {
  return {0, std::nullopt, "", true, "error", message, 0};
}

} // namespace

std::vector<Channel::Item> Channel::take(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  ready_.wait_for(lock, timeout, [&] { return !items_.empty(); });
  std::vector<Item> items(std::make_move_iterator(items_.begin()), std::make_move_iterator(items_.end()));
  items_.clear();
  return items;
}

bool Channel::finished() const {
  std::lock_guard lock(mutex_);
  return unfinished_ == 0 && items_.empty();
}

void Channel::push(Item item) {
  std::lock_guard lock(mutex_);
  if (item.update.finished)
    --unfinished_;
  items_.push_back(std::move(item));
  ready_.notify_all();
}

EngineLoop::EngineLoop(runtime::Scheduler &scheduler, runtime::BlockManager &pages, size_t max_waiting)
    : scheduler_(scheduler), pages_(pages), maxWaiting_(max_waiting) {
  publishStats();
}

std::shared_ptr<Channel> EngineLoop::submit(std::vector<runtime::GenerationRequest> requests,
                                            const runtime::Executor &executor) {
  for (const runtime::GenerationRequest &request : requests)
    runtime::validateRequest(request, executor);  // reads only the plan: safe off the loop thread
  auto channel = std::make_shared<Channel>(requests.size());
  std::lock_guard lock(mutex_);
  if (stats_.waiting + inboxRequests_ + requests.size() > maxWaiting_)
    throw Overloaded("the server is overloaded: " + std::to_string(stats_.waiting + inboxRequests_) +
                     " requests are waiting (limit " + std::to_string(maxWaiting_) + ")");
  inboxRequests_ += requests.size();
  inbox_.push_back({channel, std::move(requests)});
  wake_.notify_one();
  return channel;
}

void EngineLoop::cancel(const std::shared_ptr<Channel> &channel) {
  std::lock_guard lock(mutex_);
  cancelled_.push_back(channel);
  wake_.notify_one();
}

void EngineLoop::stop() {
  std::lock_guard lock(mutex_);
  stopping_ = true;
  wake_.notify_one();
}

LoopStats EngineLoop::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void EngineLoop::publishStats() {
  LoopStats stats;
  stats.waiting = scheduler_.numWaiting();
  stats.running = scheduler_.numRunning();
  stats.kv_pages = pages_.numPages();
  stats.kv_pages_used = pages_.numPages() - pages_.numFree();
  stats.kv_pages_cached = pages_.numCached();
  stats.counters = scheduler_.counters();
  stats.forward_seconds = scheduler_.executor().forwardSeconds();
  stats.host_seconds_between_forwards = hostSecondsBetweenForwards_;
  std::lock_guard lock(mutex_);
  stats_ = stats;
}

void EngineLoop::countHostGap() {
  if (collectedAt_)
    hostSecondsBetweenForwards_ +=
        std::chrono::duration<double>(scheduler_.executor().lastLaunchStart() - *collectedAt_).count();
  collectedAt_.reset();
}

void EngineLoop::run() {
  std::vector<Submitted> submitted;
  std::vector<std::shared_ptr<Channel>> cancelled;
  while (waitForWork(submitted, cancelled)) {
    admit(submitted);
    dropCancelled(cancelled);
    runForward();
  }
}

bool EngineLoop::waitForWork(std::vector<Submitted> &submitted, std::vector<std::shared_ptr<Channel>> &cancelled) {
  std::unique_lock lock(mutex_);
  auto hasWork = [&] {
    return stopping_ || !inbox_.empty() || !cancelled_.empty() || !scheduler_.idle() || !pending_.empty();
  };
  if (!hasWork())
    collectedAt_.reset();  // the device now idles for want of work, not for host work
  wake_.wait(lock, hasWork);
  if (stopping_) {
    lock.unlock();
    deliver(std::exchange(pending_, {}));
    lock.lock();
    // Whatever is still waiting or running ends with an error now.
    for (Submitted &group : inbox_)
      for (size_t i = 0; i < group.requests.size(); ++i)
        group.channel->push({i, failure("the server is shutting down")});
    inbox_.clear();
    lock.unlock();
    deliver(scheduler_.failAll("the server is shutting down"));
    return false;
  }
  submitted.clear();
  cancelled.clear();
  submitted.swap(inbox_);
  cancelled.swap(cancelled_);
  inboxRequests_ = 0;
  return true;
}

void EngineLoop::admit(std::vector<Submitted> &submitted) {
  for (Submitted &group : submitted)
    for (size_t i = 0; i < group.requests.size(); ++i) {
      try {
        members_[scheduler_.add(std::move(group.requests[i]))] = {group.channel, i};
      } catch (const std::exception &error) {  // validated on submit; kept for safety
        group.channel->push({i, failure(error.what())});
      }
    }
}

// A cancelled group's requests (its client disconnected, or its handler
// ended early) leave the scheduler now.
void EngineLoop::dropCancelled(const std::vector<std::shared_ptr<Channel>> &cancelled) {
  for (auto it = members_.begin(); it != members_.end();) {
    if (std::count(cancelled.begin(), cancelled.end(), it->second.channel) > 0) {
      scheduler_.abort(it->first);
      it = members_.erase(it);
    } else {
      ++it;
    }
  }
}

void EngineLoop::runForward() {
  // A failed forward fails the requests in flight, not the server.
  auto fail = [&](const std::exception &error) {
    collectedAt_.reset();
    std::vector<runtime::SequenceUpdate> failed =
        scheduler_.failAll(std::string("the forward failed: ") + error.what());
    pending_.insert(pending_.end(), std::make_move_iterator(failed.begin()), std::make_move_iterator(failed.end()));
  };
  auto handOut = [&] {
    deliver(std::exchange(pending_, {}));
    publishStats();
  };
  const bool overlap = scheduler_.executor().launchesOverlapHost();
  if (!overlap)
    handOut();
  bool launched = false;
  try {
    launched = scheduler_.launch();
  } catch (const std::exception &error) {
    fail(error);
  }
  if (launched)
    countHostGap();
  if (overlap || !pending_.empty())  // failed requests' updates too
    handOut();
  if (launched) {
    try {
      pending_ = scheduler_.complete();
      collectedAt_ = std::chrono::steady_clock::now();
    } catch (const std::exception &error) {
      fail(error);
    }
  }
}

void EngineLoop::deliver(std::vector<runtime::SequenceUpdate> updates) {
  for (runtime::SequenceUpdate &update : updates) {
    auto member = members_.find(update.id);
    if (member == members_.end())
      continue;
    const bool finished = update.finished;
    member->second.channel->push({member->second.index, std::move(update)});
    if (finished)
      members_.erase(member);
  }
}

} // namespace llmc::serve
