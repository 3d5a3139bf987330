#include "runtime/plan/PlanFile.h"

#include <filesystem>
#include <fstream>
#include <new>

namespace llmc::plan {
namespace {

constexpr std::align_val_t kAlignment{64};
constexpr size_t kMaxPlanBytes = size_t(2) << 30;  // FlatBuffers cannot address more

[[noreturn]] void fail(const std::string &source, const std::string &message) {
  throw PlanError(source + ": " + message);
}

template <typename T>
size_t count(const flatbuffers::Vector<T> *vector) {
  return vector ? vector->size() : 0;
}

void checkIndex(const std::string &source, int64_t index, size_t size, const std::string &what) {
  if (index < 0 || size_t(index) >= size)
    fail(source, what + " " + std::to_string(index) + " is out of range (" + std::to_string(size) +
                     " entries)");
}

// Structural checks FlatBuffers' verifier cannot know: presence of required
// tables and that every cross-reference points inside its table.
void checkSemantics(const Plan &plan, const std::string &source) {
  if (!plan.model() || !plan.kv_cache() || !plan.ranks() || plan.ranks()->size() == 0 ||
      !plan.parallel())
    fail(source, "plan lacks its model, parallel layout, KV-cache or rank sections");
  if (!plan.model()->architecture() || !plan.model()->family())
    fail(source, "plan lacks the model's architecture or family");
  if (!plan.kernels())
    fail(source, "plan lacks its kernel table");
  const size_t numKernels = count(plan.kernels());
  for (const KernelModule *kernel : *plan.kernels()) {
    if (!kernel->name() || !kernel->source() || !kernel->entries() ||
        kernel->entries()->size() != 1 || !kernel->grid() || kernel->grid()->size() != 3 ||
        !kernel->kernel_template() || !kernel->params())
      fail(source, "kernel module lacks its name, source, entry, template, parameters or 3-d grid");
    for (const SymExpr *dim : *kernel->grid())
      if (dim->divisor() <= 0)
        fail(source, "kernel grid has a non-positive divisor");
    if (kernel->block_threads() <= 0 || kernel->block_threads() > 1024)
      fail(source, "kernel block size is outside [1, 1024]");
  }
  for (const RankProgram *rank : *plan.ranks()) {
    if (!rank->buffers() || !rank->steps() || !rank->outputs() || !rank->parameters())
      fail(source, "rank program lacks its buffers, steps, outputs or parameters");
    const size_t numBuffers = count(rank->buffers());
    const size_t numParams = count(rank->parameters());
    const size_t numConstants = count(rank->constants());
    for (const Buffer *buffer : *rank->buffers()) {
      if (buffer->cols() <= 0 || buffer->offset_per_row() < 0)
        fail(source, "buffer with non-positive columns or negative offset");
      if (buffer->kind() == BufferKind::parameter)
        checkIndex(source, buffer->index(), numParams, "parameter");
      if (buffer->kind() == BufferKind::constant)
        checkIndex(source, buffer->index(), numConstants, "constant");
      if (buffer->kind() == BufferKind::kv_keys || buffer->kind() == BufferKind::kv_values)
        checkIndex(source, buffer->index(), size_t(plan.kv_cache()->num_layers()), "KV layer");
      if (buffer->kind() == BufferKind::input && !buffer->name())
        fail(source, "input buffer without a name");
    }
    for (const Parameter *param : *rank->parameters()) {
      if (!param->name() || !param->shape() || !param->sources() || param->sources()->size() == 0)
        fail(source, "parameter lacks its name, shape or sources");
      for (const WeightSource *weightSource : *param->sources())
        if (!weightSource->name() || !weightSource->shape())
          fail(source, "weight source lacks its name or shape");
    }
    if (rank->constants())
      for (const Constant *constant : *rank->constants())
        if (!constant->data() || !constant->shape())
          fail(source, "constant lacks its data or shape");
    for (const Step *step : *rank->steps()) {
      if (const Launch *launch = step->op_as_Launch()) {
        checkIndex(source, launch->kernel(), numKernels, "kernel");
        if (!launch->buffers())
          fail(source, "kernel launch without buffer arguments");
        for (int32_t buffer : *launch->buffers())
          checkIndex(source, buffer, numBuffers, "buffer");
      } else if (const Gemm *gemm = step->op_as_Gemm()) {
        for (int32_t buffer : {gemm->input(), gemm->weight(), gemm->out()})
          checkIndex(source, buffer, numBuffers, "buffer");
        if (gemm->bias() != -1)
          checkIndex(source, gemm->bias(), numBuffers, "buffer");
      } else {
        fail(source, "step of unknown kind");
      }
    }
    for (const Output *output : *rank->outputs()) {
      if (!output->name())
        fail(source, "output without a name");
      checkIndex(source, output->buffer(), numBuffers, "output buffer");
    }
  }
}

} // namespace

void PlanFile::FreeAligned::operator()(uint8_t *p) const { ::operator delete[](p, kAlignment); }

PlanFile PlanFile::fromBytes(std::span<const uint8_t> bytes, const std::string &source) {
  // Size prefix, root offset and file identifier: 12 bytes before anything else.
  if (bytes.size() < 12)
    fail(source, "file too short to be a plan (" + std::to_string(bytes.size()) + " bytes)");
  if (bytes.size() > kMaxPlanBytes)
    fail(source, "file larger than 2 GiB cannot be a plan");
  // Plans are size-prefixed, so that any truncation (even of trailing
  // padding, which the FlatBuffers verifier cannot notice) is detected.
  if (!flatbuffers::BufferHasIdentifier(bytes.data(), PlanIdentifier(), /*size_prefixed=*/true))
    fail(source, "not an llmc plan (file identifier is not LLMP)");
  const size_t declared = flatbuffers::ReadScalar<flatbuffers::uoffset_t>(bytes.data()) +
                          sizeof(flatbuffers::uoffset_t);
  if (declared != bytes.size())
    fail(source, "plan is truncated or has trailing bytes (" + std::to_string(bytes.size()) +
                     " bytes, header says " + std::to_string(declared) + ")");

  PlanFile file;
  file.data_.reset(static_cast<uint8_t *>(::operator new[](bytes.size(), kAlignment)));
  file.size_ = bytes.size();
  std::copy(bytes.begin(), bytes.end(), file.data_.get());

  flatbuffers::Verifier verifier(file.data_.get(), file.size_);
  if (!VerifySizePrefixedPlanBuffer(verifier))
    fail(source, "plan is corrupted or truncated (FlatBuffers verification failed)");
  file.plan_ = GetSizePrefixedPlan(file.data_.get());
  if (file.plan_->schema_major() != kSchemaMajor)
    fail(source, "plan schema version " + std::to_string(file.plan_->schema_major()) + "." +
                     std::to_string(file.plan_->schema_minor()) + " is not supported (this build reads " +
                     std::to_string(kSchemaMajor) + ".x); recompile the engine with a matching llmc");
  checkSemantics(*file.plan_, source);
  return file;
}

PlanFile PlanFile::load(const std::string &path) {
  std::filesystem::path file = path;
  if (!std::filesystem::is_regular_file(file))
    file /= "plan.llmp";  // an engine directory (or a path that is neither)
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw PlanError(file.string() + ": cannot open (is '" + path + "' an engine directory?)");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fromBytes(bytes, file.string());
}

const char *dtypeName(DType dtype) {
  switch (dtype) {
  case DType::f32: return "f32";
  case DType::f16: return "f16";
  case DType::bf16: return "bf16";
  case DType::i32: return "i32";
  }
  return "unknown";
}

int dtypeBytes(DType dtype) {
  switch (dtype) {
  case DType::f32: case DType::i32: return 4;
  case DType::f16: case DType::bf16: return 2;
  }
  return 0;
}

} // namespace llmc::plan
