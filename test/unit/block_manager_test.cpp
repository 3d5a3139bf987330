// BlockManager: allocation, reference counts, exhaustion and misuse.

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

} // namespace
