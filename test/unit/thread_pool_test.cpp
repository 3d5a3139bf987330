// ThreadPool: every index of every loop runs exactly once, on any number of
// workers, loop after loop.

#include "runtime/support/ThreadPool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace {

TEST(ThreadPool, EveryIndexRunsOnceInEveryLoop) {
  for (unsigned workers : {0u, 1u, 3u, 8u}) {
    llmc::ThreadPool pool(workers);
    EXPECT_EQ(pool.parallelism(), workers + 1);
    for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(1000)}) {
      for (int loop = 0; loop < 20; ++loop) {
        std::vector<std::atomic<int>> hits(n);
        pool.parallelFor(n, [&](size_t i) { hits[i].fetch_add(1); });
        for (size_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[i].load(), 1) << workers << " workers, n " << n << ", index " << i;
      }
    }
  }
}

TEST(ThreadPool, LoopsUseTheWorkers) {
  llmc::ThreadPool pool(3);
  std::mutex mutex;
  std::set<std::thread::id> threads;
  std::atomic<int> waiting{0};
  // Each call waits until four calls are running at once, so all four
  // threads (three workers and the caller) must take part.
  pool.parallelFor(4, [&](size_t) {
    ++waiting;
    while (waiting.load() < 4)
      std::this_thread::yield();
    std::lock_guard lock(mutex);
    threads.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(threads.size(), 4u);
}

} // namespace
