// A plan's weight recipes against a checkpoint: each parameter is the
// concatenation of checkpoint tensors along an axis, converted to the
// parameter's dtype. Used by the runtime to bind weights and by llmc to
// validate a checkpoint at compile time (one piece of code for both).
#pragma once

#include "runtime/backend/Backend.h"
#include "runtime/plan/PlanFile.h"
#include "runtime/weights/safetensors.h"

#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmc::runtime {

/// A checkpoint that does not match the plan; the message lists every problem.
class WeightError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

struct RecipeReport {
  std::vector<std::string> errors;  // missing, misshapen or non-float source tensors
  std::vector<std::string> unused;  // checkpoint tensors no recipe reads
};

RecipeReport checkRecipes(const plan::RankProgram &rank, const weights::Checkpoint &checkpoint);

/// Throws WeightError with all of the report's errors in one line, if any.
void throwIfInvalid(const RecipeReport &report, const std::string &checkpoint_dir);

/// Reports bytes bound so far out of the total (a progress bar on a terminal).
using LoadProgress = std::function<void(size_t done, size_t total)>;

/// Bytes of one parameter (its shape in its dtype).
size_t parameterBytes(const plan::Parameter &param);

/// Checks every recipe (all problems in one WeightError), then builds each
/// parameter and uploads it to targets[i] (device memory of
/// parameterBytes(rank.parameters()[i]) bytes).
void bindWeights(const plan::RankProgram &rank, const weights::Checkpoint &checkpoint,
                 const std::string &checkpoint_dir, Backend &backend, std::span<void *const> targets,
                 const LoadProgress &progress = {});

/// Fills every parameter's target with seeded uniform(-0.05, 0.05) values (a
/// random block, tiled), for benchmarks without a checkpoint: never zeros.
void bindRandomWeights(const plan::RankProgram &rank, uint64_t seed, Backend &backend,
                       std::span<void *const> targets);

} // namespace llmc::runtime
