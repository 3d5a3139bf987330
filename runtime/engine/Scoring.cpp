#include "runtime/engine/Scoring.h"

#include "runtime/support/Math.h"

#include <algorithm>
#include <optional>
#include <stdexcept>

namespace llmc::runtime {

std::vector<std::vector<float>> teacherForcedLogits(Executor &executor, BlockManager &pages,
                                                    const std::vector<std::vector<int32_t>> &prompts,
                                                    int64_t rows_per_forward) {
  const int64_t rowsPerForward = rows_per_forward > 0
                                     ? std::min(rows_per_forward, executor.maxSeqsPerForward())
                                     : executor.maxSeqsPerForward();
  const int32_t pageSize = executor.pageSize();
  const size_t vocab = size_t(executor.vocabSize());

  // Page tables for every prompt, held until all are scored.
  std::vector<std::vector<int32_t>> tables(prompts.size());
  auto releaseAll = [&] {
    for (auto &table : tables)
      for (int32_t page : table)
        pages.release(page);
  };
  std::vector<std::vector<float>> logits(prompts.size());
  try {
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (prompts[i].empty() || int64_t(prompts[i].size()) > executor.maxSeqLen())
        throw std::invalid_argument("prompt " + std::to_string(i) + " has " +
                                    std::to_string(prompts[i].size()) +
                                    " tokens; it needs 1 to max sequence length " +
                                    std::to_string(executor.maxSeqLen()));
      for (int64_t p = 0; p < ceilDiv(int64_t(prompts[i].size()), pageSize); ++p) {
        std::optional<int32_t> page = pages.allocate();
        if (!page)
          throw std::invalid_argument("the prompts do not fit in the KV cache");
        tables[i].push_back(*page);
      }
      logits[i].resize(prompts[i].size() * vocab);
    }

    // (prompt, position) rows in order; a forward takes the next rowsPerForward.
    std::vector<std::pair<size_t, int32_t>> rows;
    for (size_t i = 0; i < prompts.size(); ++i)
      for (int32_t p = 0; p < int32_t(prompts[i].size()); ++p)
        rows.emplace_back(i, p);
    std::vector<float> out;
    for (size_t start = 0; start < rows.size(); start += size_t(rowsPerForward)) {
      const size_t end = std::min(rows.size(), start + size_t(rowsPerForward));
      ForwardBatch batch;
      for (size_t r = start; r < end; ++r) {
        auto [i, p] = rows[r];
        batch.addChunk({&prompts[i][size_t(p)], 1}, p, tables[i], pageSize);
      }
      executor.forward(batch, out);
      for (size_t r = start; r < end; ++r) {
        auto [i, p] = rows[r];
        std::copy_n(out.begin() + long((r - start) * vocab), vocab,
                    logits[i].begin() + long(size_t(p) * vocab));
      }
    }
  } catch (...) {
    releaseAll();
    throw;
  }
  releaseAll();
  return logits;
}

} // namespace llmc::runtime
