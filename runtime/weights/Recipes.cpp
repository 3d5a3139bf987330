#include "runtime/weights/Recipes.h"

#include "runtime/weights/float16.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>

namespace llmc::runtime {
namespace {

std::string shapeText(std::span<const int64_t> shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

bool isFloat(weights::DType dtype) {
  return dtype == weights::DType::F32 || dtype == weights::DType::F16 ||
         dtype == weights::DType::BF16;
}

float readFloat(weights::DType dtype, const std::byte *p) {
  uint16_t half;
  switch (dtype) {
  case weights::DType::F32: { float v; std::memcpy(&v, p, 4); return v; }
  case weights::DType::F16: std::memcpy(&half, p, 2); return weights::halfToFloat(half);
  case weights::DType::BF16: std::memcpy(&half, p, 2); return weights::bf16ToFloat(half);
  default: throw WeightError("unsupported source dtype");  // excluded by checkRecipes
  }
}

void writeFloat(plan::DType dtype, float value, std::byte *p) {
  uint16_t half;
  switch (dtype) {
  case plan::DType::f32: std::memcpy(p, &value, 4); return;
  case plan::DType::f16: half = weights::floatToHalf(value); std::memcpy(p, &half, 2); return;
  case plan::DType::bf16: half = weights::floatToBf16(value); std::memcpy(p, &half, 2); return;
  case plan::DType::i32: throw WeightError("parameters cannot have dtype i32");
  }
}

bool sameDType(weights::DType source, plan::DType target) {
  return (source == weights::DType::F32 && target == plan::DType::f32) ||
         (source == weights::DType::F16 && target == plan::DType::f16) ||
         (source == weights::DType::BF16 && target == plan::DType::bf16);
}

// Concatenates the sources along the axis, converting each element.
std::vector<std::byte> buildParameter(const plan::Parameter &param,
                                      const weights::Checkpoint &checkpoint) {
  const auto &shape = *param.shape();
  int64_t outer = 1;  // product of the dimensions before the concat axis
  for (int d = 0; d < param.concat_axis(); ++d)
    outer *= shape[d];
  int64_t elements = 1;
  for (int64_t dim : shape)
    elements *= dim;
  const int outBytes = plan::dtypeBytes(param.dtype());
  std::vector<std::byte> out(size_t(elements) * outBytes);

  const int64_t sliceElements = elements / outer;
  int64_t offset = 0;  // where this source starts inside each outer slice
  for (const plan::WeightSource *source : *param.sources()) {
    const weights::TensorInfo &tensor = *checkpoint.find(source->name()->string_view());
    std::span<const std::byte> data = checkpoint.data(tensor);
    const int64_t chunk = tensor.numElements() / outer;
    const size_t inBytes = weights::dtypeBytes(tensor.dtype);
    const bool sameType = sameDType(tensor.dtype, param.dtype());
    for (int64_t o = 0; o < outer; ++o) {
      std::byte *target = &out[size_t(o * sliceElements + offset) * outBytes];
      const std::byte *from = &data[size_t(o * chunk) * inBytes];
      if (sameType) {
        std::memcpy(target, from, size_t(chunk) * inBytes);  // no conversion: copy the slice
        continue;
      }
      for (int64_t i = 0; i < chunk; ++i)
        writeFloat(param.dtype(), readFloat(tensor.dtype, from + size_t(i) * inBytes),
                   target + size_t(i) * outBytes);
    }
    offset += chunk;
  }
  return out;
}

} // namespace

RecipeReport checkRecipes(const plan::RankProgram &rank, const weights::Checkpoint &checkpoint) {
  RecipeReport report;
  std::set<std::string, std::less<>> used;
  for (const plan::Parameter *param : *rank.parameters()) {
    for (const plan::WeightSource *source : *param->sources()) {
      std::string name = source->name()->str();
      if (!used.insert(name).second)
        continue;
      const weights::TensorInfo *tensor = checkpoint.find(name);
      if (!tensor) {
        report.errors.push_back("missing tensor '" + name + "'");
        continue;
      }
      std::vector<int64_t> expected(source->shape()->begin(), source->shape()->end());
      if (tensor->shape != expected)
        report.errors.push_back("tensor '" + name + "' has shape " + shapeText(tensor->shape) +
                                ", expected " + shapeText(expected));
      if (!isFloat(tensor->dtype))
        report.errors.push_back("tensor '" + name + "' has dtype " +
                                std::string(weights::dtypeName(tensor->dtype)) +
                                ", expected F32, F16 or BF16");
    }
  }
  for (const weights::TensorInfo &tensor : checkpoint.tensors())
    if (!used.count(tensor.name))
      report.unused.push_back(tensor.name);
  return report;
}

void throwIfInvalid(const RecipeReport &report, const std::string &checkpoint_dir) {
  if (report.errors.empty())
    return;
  std::string message = "checkpoint in " + checkpoint_dir + " does not match the model (" +
                        std::to_string(report.errors.size()) + " problem" +
                        (report.errors.size() == 1 ? "" : "s") + "): ";
  for (size_t i = 0; i < report.errors.size(); ++i)
    message += (i ? "; " : "") + report.errors[i];
  throw WeightError(message);
}

size_t parameterBytes(const plan::Parameter &param) {
  size_t elements = 1;
  for (int64_t dim : *param.shape())
    elements *= size_t(dim);
  return elements * size_t(plan::dtypeBytes(param.dtype()));
}

void bindWeights(const plan::RankProgram &rank, const weights::Checkpoint &checkpoint,
                 const std::string &checkpoint_dir, Backend &backend, std::span<void *const> targets,
                 const LoadProgress &progress) {
  throwIfInvalid(checkRecipes(rank, checkpoint), checkpoint_dir);
  if (targets.size() != rank.parameters()->size())
    throw std::logic_error("bindWeights needs one target per parameter");
  const size_t total = size_t(plan::parameterBytes(rank));
  size_t done = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    const plan::Parameter *param = rank.parameters()->Get(uint32_t(i));
    if (progress)
      progress(done, total);
    const size_t bytes = parameterBytes(*param);
    done += bytes;
    // Sources already in the parameter's dtype and concatenated along the
    // first axis are contiguous pieces of it: upload them straight from the
    // mapped checkpoint. Anything else is built on the host first.
    const bool direct =
        param->concat_axis() == 0 &&
        std::all_of(param->sources()->begin(), param->sources()->end(), [&](const plan::WeightSource *s) {
          return sameDType(checkpoint.find(s->name()->string_view())->dtype, param->dtype());
        });
    auto *target = static_cast<std::byte *>(targets[i]);
    if (direct) {
      for (const plan::WeightSource *source : *param->sources()) {
        std::span<const std::byte> data = checkpoint.data(*checkpoint.find(source->name()->string_view()));
        if (size_t(target - static_cast<std::byte *>(targets[i])) + data.size() > bytes)
          throw std::logic_error("checked sources overrun parameter '" + param->name()->str() + "'");
        backend.upload(target, data.data(), data.size());
        target += data.size();
      }
      continue;
    }
    std::vector<std::byte> built = buildParameter(*param, checkpoint);
    if (built.size() != bytes)
      throw std::logic_error("parameter '" + param->name()->str() + "' was built with the wrong size");
    backend.upload(target, built.data(), built.size());
  }
  if (progress)
    progress(total, total);
}

// One block of random values per dtype, drawn once; parameter i is filled
// with the block repeated from a different starting element. Drawing every
// element of an 8B model on the host took longer than the rest of the start.
void bindRandomWeights(const plan::RankProgram &rank, uint64_t seed, Backend &backend,
                       std::span<void *const> targets) {
  if (targets.size() != rank.parameters()->size())
    throw std::logic_error("bindRandomWeights needs one target per parameter");
  constexpr size_t kBlockElements = 1 << 22;
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<float> uniform(-0.05f, 0.05f);
  std::vector<float> values(kBlockElements);
  for (float &value : values)
    value = uniform(engine);
  std::map<plan::DType, std::vector<std::byte>> blocks;  // the values twice over, encoded
  for (size_t i = 0; i < targets.size(); ++i) {
    const plan::Parameter *param = rank.parameters()->Get(uint32_t(i));
    const size_t elementBytes = size_t(plan::dtypeBytes(param->dtype()));
    std::vector<std::byte> &block = blocks[param->dtype()];
    if (block.empty()) {
      block.resize(2 * kBlockElements * elementBytes);
      for (size_t e = 0; e < 2 * kBlockElements; ++e)
        writeFloat(param->dtype(), values[e % kBlockElements], &block[e * elementBytes]);
    }
    const size_t first = (i * 7919) % kBlockElements * elementBytes;
    const size_t piece = kBlockElements * elementBytes;
    const size_t bytes = parameterBytes(*param);
    auto *target = static_cast<std::byte *>(targets[i]);
    for (size_t done = 0; done < bytes; done += piece)
      backend.upload(target + done, block.data() + first, std::min(piece, bytes - done));
  }
}

} // namespace llmc::runtime
