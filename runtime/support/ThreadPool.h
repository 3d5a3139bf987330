// A fixed set of host threads for data-parallel loops (sampling many rows of
// logits at once). Header-only; the calling thread takes part in each loop.
#pragma once

#include <atomic>
#include <csignal>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <pthread.h>
#include <thread>
#include <vector>

namespace llmc {

class ThreadPool {
public:
  /// `threads` workers besides the caller (0: none, every loop runs inline).
  /// Workers block every signal: a process that waits for SIGTERM in one
  /// thread (llmrun serve) must not have it delivered to a worker.
  explicit ThreadPool(unsigned threads) {
    for (unsigned i = 0; i < threads; ++i)
      workers_.emplace_back([this] {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, nullptr);
        work();
      });
  }
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread &worker : workers_)
      worker.join();
  }
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  /// Workers plus the caller.
  unsigned parallelism() const { return unsigned(workers_.size()) + 1; }

  /// Calls fn(i) once for every i in [0, n), on the workers and the caller,
  /// and returns when every call has returned. fn must not throw. One loop
  /// at a time (the owner's thread calls this).
  void parallelFor(size_t n, const std::function<void(size_t)> &fn) {
    if (n == 0)
      return;
    {
      std::lock_guard lock(mutex_);
      loop_ = &fn;
      count_ = n;
      next_ = 0;
      busy_ = unsigned(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    run(fn, n);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
    loop_ = nullptr;
  }

private:
  void run(const std::function<void(size_t)> &fn, size_t n) {
    for (size_t i = next_.fetch_add(1); i < n; i = next_.fetch_add(1))
      fn(i);
  }

  void work() {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(size_t)> *fn;
      size_t n;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_)
          return;
        seen = generation_;
        fn = loop_;
        n = count_;
      }
      run(*fn, n);
      std::lock_guard lock(mutex_);
      if (--busy_ == 0)
        done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(size_t)> *loop_ = nullptr;
  size_t count_ = 0;
  std::atomic<size_t> next_{0};
  unsigned busy_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

} // namespace llmc
