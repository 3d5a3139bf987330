// Teacher-forced logits: the logits at every position of given prompts, as
// `llmrun logits` and the golden tests need them.
#pragma once

#include "runtime/engine/Executor.h"
#include "runtime/kv/BlockManager.h"

#include <cstdint>
#include <vector>

namespace llmc::runtime {

/// Returns, per prompt, its logits [prompt length, vocab] (row p predicts
/// token p + 1). The forward ABI gives one logits row per sequence, so each
/// position runs as a one-token sequence sharing its prompt's page table:
/// all rows of a forward write their KV before any attends, and causality
/// comes from the positions. `rows_per_forward` (0: the executor's maximum
/// sequences per forward) bounds how many positions one forward takes;
/// positions of several prompts share a forward (a ragged batch).
std::vector<std::vector<float>> teacherForcedLogits(Executor &executor, BlockManager &pages,
                                                    const std::vector<std::vector<int32_t>> &prompts,
                                                    int64_t rows_per_forward = 0);

} // namespace llmc::runtime
