// ForwardBatch (the forward ABI arrays) and the decode graph sizes: how a
// decode batch is padded to the size of a captured graph.

#include "runtime/engine/Executor.h"

#include <gtest/gtest.h>

namespace {

using llmc::runtime::decodeGraphSizes;
using llmc::runtime::ForwardBatch;

TEST(ForwardBatch, ChunksDescribeTheirPagesAndLogitsRows) {
  ForwardBatch batch;
  const std::vector<int32_t> prompt = {5, 6, 7}, pages = {4, 9};
  batch.addChunk(prompt, 15, pages, 16);  // positions 15..17: two pages, 2 in the last
  batch.addChunk(std::vector<int32_t>{8}, 0, std::vector<int32_t>{3}, 16);
  EXPECT_EQ(batch.positions, (std::vector<int32_t>{15, 16, 17, 0}));
  EXPECT_EQ(batch.qo_indptr, (std::vector<int32_t>{0, 3, 4}));
  EXPECT_EQ(batch.kv_indptr, (std::vector<int32_t>{0, 2, 3}));
  EXPECT_EQ(batch.kv_page_indices, (std::vector<int32_t>{4, 9, 3}));
  EXPECT_EQ(batch.kv_last_page_len, (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(batch.logits_rows, (std::vector<int32_t>{2, 3}));
}

TEST(ForwardBatch, PaddingAddsOneTokenSequencesOnTheGivenPage) {
  ForwardBatch batch;
  batch.addChunk(std::vector<int32_t>{11}, 40, std::vector<int32_t>{1, 2, 7}, 16);
  batch.padSequences(4, 99, 16);
  EXPECT_EQ(batch.numSeqs(), 4);
  EXPECT_EQ(batch.numTokens(), 4);  // still a decode batch: one token a sequence
  EXPECT_EQ(batch.token_ids, (std::vector<int32_t>{11, 0, 0, 0}));
  EXPECT_EQ(batch.positions, (std::vector<int32_t>{40, 0, 0, 0}));
  EXPECT_EQ(batch.kv_page_indices, (std::vector<int32_t>{1, 2, 7, 99, 99, 99}));
  EXPECT_EQ(batch.kv_indptr, (std::vector<int32_t>{0, 3, 4, 5, 6}));
  EXPECT_EQ(batch.kv_last_page_len, (std::vector<int32_t>{9, 1, 1, 1}));
  EXPECT_EQ(batch.logits_rows, (std::vector<int32_t>{0, 1, 2, 3}));  // the real row stays first
  batch.padSequences(2, 99, 16);  // never shrinks
  EXPECT_EQ(batch.numSeqs(), 4);
}

TEST(DecodeGraphSizes, CoverEveryBatchSizeUpToTheMaximum) {
  EXPECT_EQ(decodeGraphSizes(256), (std::vector<int64_t>{1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 96,
                                                         128, 160, 192, 224, 256}));
  EXPECT_EQ(decodeGraphSizes(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(decodeGraphSizes(20), (std::vector<int64_t>{1, 2, 4, 8, 16, 20}));
  EXPECT_EQ(decodeGraphSizes(100), (std::vector<int64_t>{1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 96, 100}));
}

} // namespace
