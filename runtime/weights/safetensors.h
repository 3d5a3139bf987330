// A small, strict safetensors reader/writer with no LLVM/MLIR dependency.
//
// Format (https://github.com/huggingface/safetensors): 8-byte little-endian
// header length N, then N bytes of JSON, then the data section. The JSON maps
// tensor names to {"dtype", "shape", "data_offsets": [begin, end]} with
// offsets relative to the start of the data section; an optional
// "__metadata__" entry maps strings to strings.
//
// Every malformed input is reported by throwing SafetensorsError with a
// one-line message naming the file and the problem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/weights/float16.h"

namespace llmc::weights {

class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2 };

// Safetensors spelling, e.g. "BF16", "F8_E4M3".
std::string_view dtypeName(DType dtype);
// Inverse of dtypeName; nullopt for anything else (case-sensitive).
std::optional<DType> parseDType(std::string_view name);
// Size of one element in bytes.
size_t dtypeBytes(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data section
  uint64_t end = 0;
  std::string file;  // path of the shard holding it

  uint64_t numBytes() const { return end - begin; }
  int64_t numElements() const;
};

// Upper bound on the JSON header size (same limit as the reference library).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Parses and validates the header of one safetensors file without reading the
// data section (the file size is taken from the file system). Tensors are
// returned sorted by data offset. Validation: entries need "dtype", "shape"
// and "data_offsets"; dtypes must be known, dims non-negative, offsets
// ordered and inside the data section, sizes equal to
// product(shape) * dtypeBytes, tensor byte ranges must not overlap (gaps and
// trailing bytes are tolerated), names must be unique and non-empty, and
// "__metadata__", if present, must map strings to strings.
std::vector<TensorInfo> readHeader(const std::string& path);
// Same, also reporting the absolute file offset of the data section
// (8 + header length).
std::vector<TensorInfo> readHeader(const std::string& path, uint64_t& data_start);

// A (possibly sharded) Hugging Face checkpoint directory.
class Checkpoint {
 public:
  // Uses DIR/model.safetensors.index.json when present, otherwise
  // DIR/model.safetensors. With an index, its "weight_map" (tensor name ->
  // shard file name, relative to DIR) is authoritative: every listed shard
  // must exist and contain the tensors mapped to it; tensors of a shard that
  // the map does not mention are not exposed. Only headers are read here.
  static Checkpoint open(const std::string& model_dir);

  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;
  ~Checkpoint();

  // nullptr when no tensor has that name.
  const TensorInfo* find(std::string_view name) const;
  // All tensors, sorted by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // Shard files, in sorted order.
  std::vector<std::string> files() const;
  // The tensor's bytes, from a read-only private mapping of its shard that is
  // created on first use and kept until the Checkpoint is destroyed.
  // `info` must come from this Checkpoint (or name a tensor of it).
  // Thread-safe. The pointer is 8-byte aligned when the file's header length
  // is a multiple of 8 (true for files from SafetensorsWriter and from the
  // reference safetensors library) and the tensor's offset is too.
  std::span<const std::byte> data(const TensorInfo& info) const;

 private:
  Checkpoint() = default;

  struct Shard {
    std::string path;
    uint64_t data_start = 0;  // absolute offset of the data section
    uint64_t file_size = 0;   // at header-reading time
    // Mapping state (lazily filled, guarded by mutex_).
    void* map_addr = nullptr;
    size_t map_len = 0;
  };
  struct State;  // mutex + shards; heap-allocated so moves are cheap and safe

  std::vector<TensorInfo> tensors_;  // sorted by name
  std::unique_ptr<State> state_;
};

// Builds a safetensors file in memory and writes it atomically.
class SafetensorsWriter {
 public:
  // Throws SafetensorsError if the name is empty/duplicate/"__metadata__",
  // a dim is negative, or bytes.size() != product(shape) * dtypeBytes(dtype).
  void add(std::string name, DType dtype, std::vector<int64_t> shape, std::vector<std::byte> bytes);
  // Optional "__metadata__" entries, e.g. {"format": "pt"}.
  void setMetadata(std::map<std::string, std::string> metadata) { metadata_ = std::move(metadata); }
  // Header JSON padded with spaces to a multiple of 8 bytes, tensors in
  // insertion order with contiguous offsets. Writes path + ".tmp", then
  // renames it over path.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace llmc::weights
