#include "models/CheckpointCheck.h"

#include <set>

namespace llmc::models {
namespace {

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

bool isFloat(weights::DType dtype) {
  return dtype == weights::DType::F32 || dtype == weights::DType::F16 ||
         dtype == weights::DType::BF16;
}

} // namespace

CheckpointReport checkCheckpoint(const std::vector<ParamSpec> &params,
                                 const weights::Checkpoint &checkpoint) {
  CheckpointReport report;
  std::set<std::string> used;
  for (const ParamSpec &param : params) {
    if (!used.insert(param.name).second)
      continue;
    const weights::TensorInfo *tensor = checkpoint.find(param.name);
    if (!tensor) {
      report.errors.push_back("missing tensor '" + param.name + "'");
      continue;
    }
    if (tensor->shape != param.shape)
      report.errors.push_back("tensor '" + param.name + "' has shape " +
                              shapeString(tensor->shape) + ", expected " +
                              shapeString(param.shape));
    if (!isFloat(tensor->dtype))
      report.errors.push_back("tensor '" + param.name + "' has dtype " +
                              std::string(weights::dtypeName(tensor->dtype)) +
                              ", expected F32, F16 or BF16");
  }
  for (const weights::TensorInfo &tensor : checkpoint.tensors())
    if (!used.count(tensor.name))
      report.warnings.push_back("unused tensor '" + tensor.name + "'");
  return report;
}

} // namespace llmc::models
