#include "runtime/plan/PlanFile.h"

#include "runtime/plan/KernelAbi.h"

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

// Bounds generous for any real model that keep every product below 2^62.
constexpr int64_t kMaxDim = int64_t(1) << 24;
constexpr int64_t kMaxElements = int64_t(1) << 40;

template <typename Enum>
bool validEnum(Enum value) {
  return value >= Enum::MIN && value <= Enum::MAX;
}

void checkRange(const std::string &source, int64_t value, int64_t lo, int64_t hi,
                const std::string &what) {
  if (value < lo || value > hi)
    fail(source, what + " " + std::to_string(value) + " is outside [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
}

int64_t elementCount(const std::string &source, const flatbuffers::Vector<int64_t> &shape,
                     const std::string &what) {
  if (shape.size() == 0 || shape.size() > 4)
    fail(source, what + " must have rank 1 to 4");
  int64_t count = 1;
  for (int64_t dim : shape) {
    checkRange(source, dim, 1, kMaxDim, what + " dimension");
    count *= dim;
    checkRange(source, count, 1, kMaxElements, what + " element count");
  }
  return count;
}

bool isFloat(DType dtype) { return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16; }

// A parameter's sources must concatenate to its shape along its axis: the
// weight recipes write exactly that many elements.
void checkParameter(const std::string &source, const Parameter &param) {
  if (!param.name() || !param.shape() || !param.sources() || param.sources()->size() == 0)
    fail(source, "parameter lacks its name, shape or sources");
  const std::string what = "parameter " + param.name()->str();
  if (!isFloat(param.dtype()))
    fail(source, what + " must be f32, f16 or bf16");
  elementCount(source, *param.shape(), what + " shape");
  const int64_t rank = param.shape()->size(), axis = param.concat_axis();
  checkRange(source, axis, 0, rank - 1, what + " concat axis");
  int64_t along = 0;
  for (const WeightSource *weightSource : *param.sources()) {
    if (!weightSource->name() || !weightSource->shape() || weightSource->shape()->size() != size_t(rank))
      fail(source, what + " has a source without a name or of another rank");
    elementCount(source, *weightSource->shape(), what + " source shape");
    for (int64_t d = 0; d < rank; ++d)
      if (d != axis && weightSource->shape()->Get(uint32_t(d)) != param.shape()->Get(uint32_t(d)))
        fail(source, what + " has a source that differs off the concat axis");
    along += weightSource->shape()->Get(uint32_t(axis));
  }
  if (along != param.shape()->Get(uint32_t(axis)))
    fail(source, what + ": its sources do not add up to its shape along the concat axis");
}

// A launch passes as many buffers and scalars as its template takes, each
// buffer as wide as the template parameters say, in the kernel's dtype, and
// the KV geometry the kernel was specialised for.
void checkLaunch(const std::string &source, const Plan &plan, const RankProgram &rank, const Launch &launch) {
  const KernelModule &kernel = *plan.kernels()->Get(uint32_t(launch.kernel()));
  const KernelAbi &abi = *findKernelAbi(kernel.kernel_template()->string_view());
  const size_t scalars = launch.scalars() ? launch.scalars()->size() : 0;
  if (launch.buffers()->size() != abi.buffers || scalars != abi.scalars)
    fail(source, "launch of " + kernel.name()->str() + " passes the wrong number of arguments");
  std::vector<int64_t> params(kernel.params()->begin(), kernel.params()->end());
  const std::vector<int64_t> widths = abi.widths(params);
  for (size_t i = 0; i < widths.size(); ++i) {
    const Buffer &buffer = *rank.buffers()->Get(uint32_t(launch.buffers()->Get(uint32_t(i))));
    const bool kvPages = buffer.kind() == BufferKind::kv_keys || buffer.kind() == BufferKind::kv_values;
    if (widths[i] == 0 ? !kvPages : (kvPages || buffer.cols() != widths[i]))
      fail(source, "launch of " + kernel.name()->str() + ": argument " + std::to_string(i) +
                       " does not have the width its template parameters require");
    const bool indices = widths[i] == 1 && buffer.dtype() == DType::i32;
    if (!kvPages && !indices && buffer.dtype() != kernel.dtype() && buffer.kind() != BufferKind::constant)
      fail(source, "launch of " + kernel.name()->str() + ": argument " + std::to_string(i) +
                       " is not of the kernel's dtype");
  }
  const std::string_view name = abi.name;
  if (name == "rope_kv_write" || name == "paged_attention") {
    const KvCacheSpec &kv = *plan.kv_cache();
    if (params[1] != kv.num_kv_heads() || params[2] != kv.head_dim() ||
        params.back() != kv.page_size() || kernel.dtype() != kv.dtype())
      fail(source, "kernel " + kernel.name()->str() + " does not match the KV-cache layout");
  }
}

// Structural checks FlatBuffers' verifier cannot know: presence of every
// field the runtime reads, enum ranges, sizes, and that every cross-reference
// points inside its table with matching shapes.
void checkSemantics(const Plan &plan, const std::string &source) {
  if (!plan.model() || !plan.kv_cache() || !plan.ranks() || plan.ranks()->size() == 0 ||
      !plan.parallel() || !plan.kernels())
    fail(source, "plan lacks its model, parallel layout, KV-cache, kernel or rank sections");
  const ModelMeta &model = *plan.model();
  if (!model.architecture() || !model.family() || !validEnum(model.dtype()))
    fail(source, "plan lacks the model's architecture, family or dtype");
  checkRange(source, model.vocab_size(), 1, kMaxDim, "vocabulary size");
  checkRange(source, model.max_seq_len(), 1, kMaxDim, "max sequence length");
  const KvCacheSpec &kv = *plan.kv_cache();
  checkRange(source, kv.num_layers(), 1, 4096, "KV-cache layer count");
  checkRange(source, kv.num_kv_heads(), 1, 4096, "KV-cache head count");
  checkRange(source, kv.head_dim(), 1, 4096, "KV-cache head dimension");
  checkRange(source, kv.page_size(), 1, 4096, "KV-cache page size");
  if (!isFloat(kv.dtype()))
    fail(source, "KV-cache dtype must be f32, f16 or bf16");
  checkRange(source, plan.max_tokens_per_forward(), 16, kMaxDim, "max tokens per forward");
  checkRange(source, plan.max_seqs_per_forward(), 1, plan.max_tokens_per_forward(), "max sequences per forward");

  auto checkCubins = [&](const flatbuffers::Vector<flatbuffers::Offset<Cubin>> *cubins) {
    if (cubins)
      for (const Cubin *cubin : *cubins)
        if (!cubin->arch() || !cubin->lowered_name() || !cubin->data() || cubin->data()->size() == 0)
          fail(source, "precompiled kernel lacks its arch, entry name or binary");
  };
  const size_t numKernels = plan.kernels()->size();
  for (const KernelModule *kernel : *plan.kernels()) {
    if (!kernel->name() || !kernel->source() || !kernel->entries() ||
        kernel->entries()->size() != 1 || !kernel->grid() || kernel->grid()->size() != 3 ||
        !kernel->kernel_template() || !kernel->params() || !isFloat(kernel->dtype()))
      fail(source, "kernel module lacks its name, source, entry, template, parameters, dtype or 3-d grid");
    for (const SymExpr *dim : *kernel->grid()) {
      checkRange(source, dim->divisor(), 1, kMaxDim, "kernel grid divisor");
      for (int64_t coefficient : {dim->tokens(), dim->seqs(), dim->constant()})
        checkRange(source, coefficient, 0, kMaxDim, "kernel grid coefficient");
    }
    checkRange(source, kernel->block_threads(), 1, 1024, "kernel block size");
    const KernelAbi *abi = findKernelAbi(kernel->kernel_template()->string_view());
    if (!abi || kernel->params()->size() != abi->params)
      fail(source, "kernel " + kernel->name()->str() + " is of an unknown template or has the wrong " +
                       "number of template parameters");
    for (int64_t param : *kernel->params())
      checkRange(source, param, 1, kMaxDim, "kernel template parameter");
    checkCubins(kernel->cubins());
    checkRange(source, kernel->shared_bytes(), 0, 228 * 1024, "kernel shared memory");
    checkRange(source, kernel->max_cluster(), 1, 16, "kernel cluster size");
  }
  if (plan.runtime_modules())
    for (const RuntimeModule *module : *plan.runtime_modules()) {
      if (!module->name() || !module->source() || !module->entry())
        fail(source, "runtime module lacks its name, source or entry");
      checkCubins(module->cubins());
    }

  for (const RankProgram *rank : *plan.ranks()) {
    if (!rank->buffers() || !rank->steps() || !rank->outputs() || !rank->parameters())
      fail(source, "rank program lacks its buffers, steps, outputs or parameters");
    checkRange(source, rank->workspace_bytes_per_token(), 0, int64_t(1) << 32, "workspace bytes per token");
    checkRange(source, rank->workspace_bytes_per_seq(), 0, int64_t(1) << 32, "workspace bytes per sequence");
    const size_t numBuffers = rank->buffers()->size();
    const size_t numParams = rank->parameters()->size();
    const size_t numConstants = count(rank->constants());
    for (const Parameter *param : *rank->parameters())
      checkParameter(source, *param);
    if (rank->constants())
      for (const Constant *constant : *rank->constants()) {
        if (!constant->data() || !constant->shape() || !isFloat(constant->dtype()))
          fail(source, "constant lacks its data, shape or dtype");
        if (int64_t(constant->data()->size()) !=
            elementCount(source, *constant->shape(), "constant shape") * dtypeBytes(constant->dtype()))
          fail(source, "constant data does not match its shape");
      }
    for (const Buffer *buffer : *rank->buffers()) {
      if (!validEnum(buffer->kind()) || !validEnum(buffer->rows()) || !validEnum(buffer->dtype()))
        fail(source, "buffer with an unknown kind, row count or dtype");
      checkRange(source, buffer->cols(), 1, kMaxDim, "buffer columns");
      switch (buffer->kind()) {
      case BufferKind::workspace: {
        const bool tokens = buffer->rows() == RowCount::tokens;
        if (!tokens && buffer->rows() != RowCount::seqs)
          fail(source, "workspace buffers have token or sequence rows");
        const int64_t region = tokens ? rank->workspace_bytes_per_token() : rank->workspace_bytes_per_seq();
        checkRange(source, buffer->offset_per_row(), 0, region, "workspace offset");
        if (buffer->offset_per_row() + buffer->cols() * dtypeBytes(buffer->dtype()) > region)
          fail(source, "workspace buffer reaches past its region");
        break;
      }
      case BufferKind::input:
        if (!buffer->name() || buffer->dtype() != DType::i32)
          fail(source, "input buffer without a name or not of i32");
        break;
      case BufferKind::parameter: checkIndex(source, buffer->index(), numParams, "parameter"); break;
      case BufferKind::constant: checkIndex(source, buffer->index(), numConstants, "constant"); break;
      case BufferKind::kv_keys:
      case BufferKind::kv_values:
        checkIndex(source, buffer->index(), size_t(kv.num_layers()), "KV layer");
        break;
      }
    }
    for (const Step *step : *rank->steps()) {
      if (const Launch *launch = step->op_as_Launch()) {
        checkIndex(source, launch->kernel(), numKernels, "kernel");
        if (!launch->buffers())
          fail(source, "kernel launch without buffer arguments");
        for (int32_t buffer : *launch->buffers())
          checkIndex(source, buffer, numBuffers, "buffer");
        if (launch->scalars())
          for (const Scalar *scalar : *launch->scalars())
            if (!validEnum(scalar->kind()))
              fail(source, "kernel launch with a scalar of unknown kind");
        checkLaunch(source, plan, *rank, *launch);
      } else if (const Gemm *gemm = step->op_as_Gemm()) {
        for (int32_t buffer : {gemm->input(), gemm->weight(), gemm->out()})
          checkIndex(source, buffer, numBuffers, "buffer");
        const Buffer &input = *rank->buffers()->Get(uint32_t(gemm->input()));
        const Buffer &weight = *rank->buffers()->Get(uint32_t(gemm->weight()));
        const Buffer &out = *rank->buffers()->Get(uint32_t(gemm->out()));
        if (weight.kind() != BufferKind::parameter)
          fail(source, "GEMM weight is not a parameter");
        const Parameter &param = *rank->parameters()->Get(uint32_t(weight.index()));
        if (param.shape()->size() != 2 || param.shape()->Get(0) != gemm->n() ||
            param.shape()->Get(1) != gemm->k() || input.cols() != gemm->k() || out.cols() != gemm->n() ||
            input.rows() != out.rows() || input.dtype() != param.dtype() || !isFloat(out.dtype()))
          fail(source, "GEMM shapes or dtypes do not match its buffers");
        if (gemm->bias() != -1) {
          checkIndex(source, gemm->bias(), numBuffers, "buffer");
          const Buffer &bias = *rank->buffers()->Get(uint32_t(gemm->bias()));
          if (bias.kind() != BufferKind::parameter ||
              rank->parameters()->Get(uint32_t(bias.index()))->shape()->size() != 1 ||
              rank->parameters()->Get(uint32_t(bias.index()))->shape()->Get(0) != gemm->n())
            fail(source, "GEMM bias is not a parameter of n elements");
        }
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

int64_t kvBytesPerToken(const Plan &plan) {
  const KvCacheSpec &kv = *plan.kv_cache();
  return 2 * kv.num_layers() * kv.num_kv_heads() * kv.head_dim() * dtypeBytes(kv.dtype());
}

int64_t parameterBytes(const RankProgram &rank) {
  int64_t bytes = 0;
  for (const Parameter *param : *rank.parameters()) {
    int64_t elements = 1;
    for (int64_t dim : *param->shape())
      elements *= dim;
    bytes += elements * dtypeBytes(param->dtype());
  }
  return bytes;
}

int64_t workspaceBytes(const RankProgram &rank, int64_t max_tokens, int64_t max_seqs) {
  return rank.workspace_bytes_per_token() * max_tokens + rank.workspace_bytes_per_seq() * max_seqs;
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
