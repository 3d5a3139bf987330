// BlockManager: allocation, reference counts, exhaustion, misuse and the
// prefix cache (lookup by chained key, sharing, LRU eviction).

#include "runtime/kv/BlockManager.h"

#include <gtest/gtest.h>

#include <set>

namespace {

using llmc::runtime::BlockManager;

TEST(BlockManager, AllocatesEveryPageOnceThenRunsOut) {
  BlockManager pages(4);
  std::set<int32_t> seen;
  for (int i = 0; i < 4; ++i) {
    auto page = pages.allocate();
    ASSERT_TRUE(page);
    EXPECT_TRUE(seen.insert(*page).second) << "page handed out twice";
    EXPECT_GE(*page, 0);
    EXPECT_LT(*page, 4);
  }
  EXPECT_EQ(pages.numFree(), 0);
  EXPECT_FALSE(pages.allocate());
}

TEST(BlockManager, SharedPageIsFreedByItsLastRelease) {
  BlockManager pages(2);
  int32_t page = *pages.allocate();
  pages.retain(page);
  EXPECT_EQ(pages.refCount(page), 2);
  pages.release(page);
  EXPECT_EQ(pages.numFree(), 1);
  pages.release(page);
  EXPECT_EQ(pages.numFree(), 2);
  EXPECT_EQ(pages.refCount(page), 0);
}

TEST(BlockManager, MisuseIsAnError) {
  BlockManager pages(2);
  EXPECT_THROW(pages.release(0), std::logic_error);  // never allocated
  EXPECT_THROW(pages.retain(7), std::logic_error);
  int32_t page = *pages.allocate();
  pages.release(page);
  EXPECT_THROW(pages.release(page), std::logic_error);  // double free
  EXPECT_THROW(BlockManager(0), std::invalid_argument);
}

TEST(BlockManager, PublishedPageIsFoundByItsPrefixAndShared) {
  BlockManager pages(4);
  const std::vector<int32_t> first{1, 2, 3, 4}, second{5, 6, 7, 8};
  int32_t a = *pages.allocate(), b = *pages.allocate();
  pages.publish(a, BlockManager::kRootKey, first);
  pages.publish(b, BlockManager::pageKey(BlockManager::kRootKey, first), second);
  EXPECT_EQ(pages.numCached(), 2);
  // Found by the same chain, with a reference for the finder.
  EXPECT_EQ(pages.lookup(BlockManager::kRootKey, first), a);
  EXPECT_EQ(pages.refCount(a), 2);
  EXPECT_EQ(pages.lookup(BlockManager::pageKey(BlockManager::kRootKey, first), second), b);
  // Other tokens, or the same tokens after another prefix, are misses.
  EXPECT_FALSE(pages.lookup(BlockManager::kRootKey, second));
  EXPECT_FALSE(pages.lookup(BlockManager::kRootKey, std::vector<int32_t>{1, 2, 3, 5}));
  // A second copy of a cached prefix stays private.
  int32_t copy = *pages.allocate();
  pages.publish(copy, BlockManager::kRootKey, first);
  EXPECT_EQ(pages.numCached(), 2);
  pages.release(copy);
  EXPECT_EQ(pages.refCount(copy), 0);
}

TEST(BlockManager, UnreferencedCachedPagesAreEvictedLeastRecentlyReleasedFirst) {
  BlockManager pages(3);
  const std::vector<int32_t> x{1, 1}, y{2, 2}, z{3, 3};
  int32_t a = *pages.allocate(), b = *pages.allocate(), c = *pages.allocate();
  pages.publish(a, BlockManager::kRootKey, x);
  pages.publish(b, BlockManager::kRootKey, y);
  pages.publish(c, BlockManager::kRootKey, z);
  pages.release(b);
  pages.release(a);
  EXPECT_EQ(pages.numFree(), 2);  // cached but evictable
  EXPECT_EQ(pages.numCached(), 3);
  // A hit takes a page off the eviction list.
  EXPECT_EQ(pages.lookup(BlockManager::kRootKey, x), a);
  EXPECT_EQ(pages.numFree(), 1);
  pages.release(a);
  // b was released before a: it goes first, and its prefix with it.
  EXPECT_EQ(pages.allocate(), b);
  EXPECT_FALSE(pages.lookup(BlockManager::kRootKey, y));
  EXPECT_EQ(pages.allocate(), a);
  EXPECT_FALSE(pages.allocate());  // c is still referenced
  EXPECT_EQ(pages.numCached(), 1);
  EXPECT_EQ(pages.lookup(BlockManager::kRootKey, z), c);
}

TEST(BlockManager, NeverUsedPagesGoBeforeCachedOnes) {
  BlockManager pages(2);
  int32_t a = *pages.allocate();
  pages.publish(a, BlockManager::kRootKey, std::vector<int32_t>{9});
  pages.release(a);
  int32_t b = *pages.allocate();
  EXPECT_NE(b, a);
  EXPECT_EQ(pages.lookup(BlockManager::kRootKey, std::vector<int32_t>{9}), a);
}

} // namespace
