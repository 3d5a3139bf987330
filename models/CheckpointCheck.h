// Checks a checkpoint's safetensors headers against the graph's parameters.
#pragma once

#include "runtime/weights/safetensors.h"

#include <cstdint>
#include <string>
#include <vector>

namespace llmc::models {

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
};

struct CheckpointReport {
  std::vector<std::string> errors;    // missing, misshapen or non-float tensors
  std::vector<std::string> warnings;  // tensors the graph does not use
};

/// Compares every parameter with the checkpoint tensor of the same name.
/// Any float dtype (F32, F16, BF16) is accepted: weights are converted to the
/// compute dtype when they are bound.
CheckpointReport checkCheckpoint(const std::vector<ParamSpec> &params,
                                 const weights::Checkpoint &checkpoint);

} // namespace llmc::models
