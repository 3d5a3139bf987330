#include "runtime/weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

namespace llmc::weights {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------------------
// DType

namespace {

struct DTypeDesc {
  DType dtype;
  std::string_view name;
  size_t bytes;
};

constexpr std::array<DTypeDesc, 12> kDTypes = {{
    {DType::F64, "F64", 8},
    {DType::F32, "F32", 4},
    {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8},
    {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},
    {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
    {DType::F8_E4M3, "F8_E4M3", 1},
    {DType::F8_E5M2, "F8_E5M2", 1},
}};

const DTypeDesc& describe(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d;
  throw SafetensorsError("invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw SafetensorsError(file + ": " + what);
}

// Keeps error messages on one line and bounded even for hostile names.
std::string quoteName(std::string_view s) {
  std::string out = "'";
  size_t n = 0;
  for (char c : s) {
    if (++n > 200) {
      out += "...";
      break;
    }
    const auto uc = static_cast<unsigned char>(c);
    if (uc < 0x20 || uc == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", uc);
      out += buf;
    } else {
      out += c;
    }
  }
  out += "'";
  return out;
}

std::string oneLine(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

std::string shapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// product(shape) * elem_bytes, or nullopt on overflow.
std::optional<uint64_t> byteSize(const std::vector<int64_t>& shape, size_t elem_bytes) {
  uint64_t n = elem_bytes;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  }
  return n;
}

uint64_t fileSizeOrFail(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail(path, "cannot open file (does not exist)");
  if (!fs::is_regular_file(st)) fail(path, "not a regular file");
  const uint64_t size = fs::file_size(path, ec);
  if (ec) fail(path, "cannot get file size: " + ec.message());
  return size;
}

// Reads exactly n bytes at offset off of an open stream.
void readExact(std::ifstream& in, const std::string& path, uint64_t off, char* dst, uint64_t n) {
  in.seekg(static_cast<std::streamoff>(off));
  in.read(dst, static_cast<std::streamsize>(n));
  if (!in || static_cast<uint64_t>(in.gcount()) != n)
    fail(path, "read error or unexpected end of file while reading the header");
}

bool isNonNegativeInteger(const json& v) {
  return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
}

}  // namespace

std::string_view dtypeName(DType dtype) { return describe(dtype).name; }

std::optional<DType> parseDType(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.dtype;
  return std::nullopt;
}

size_t dtypeBytes(DType dtype) { return describe(dtype).bytes; }

int64_t TensorInfo::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------
// Header reading

std::vector<TensorInfo> readHeader(const std::string& path) {
  uint64_t data_start = 0;
  return readHeader(path, data_start);
}

std::vector<TensorInfo> readHeader(const std::string& path, uint64_t& data_start) {
  const uint64_t file_size = fileSizeOrFail(path);
  if (file_size < 8)
    fail(path, "file is too short (" + std::to_string(file_size) +
                   " bytes) to hold a safetensors header length");

  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open file: ") + std::strerror(errno));

  unsigned char len_bytes[8];
  readExact(in, path, 0, reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];

  if (header_len > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes) + " bytes (100 MB)");
  if (header_len > file_size - 8)
    fail(path, "header length " + std::to_string(header_len) + " is larger than the file (" +
                   std::to_string(file_size) + " bytes); file truncated?");
  if (header_len == 0) fail(path, "header is empty (length 0), not valid JSON");

  std::string text(header_len, '\0');
  readExact(in, path, 8, text.data(), header_len);

  // nlohmann's lexer stops at a NUL byte, so "{}\0junk" would parse; the
  // format pads with spaces, and a NUL means a corrupt header.
  if (const auto nul = text.find('\0'); nul != std::string::npos)
    fail(path, "header is not valid JSON: NUL byte at header offset " + std::to_string(nul));

  // Parse, remembering duplicate top-level keys (nlohmann keeps the last one
  // silently, which would hide a corrupt header).
  std::string duplicate;
  std::set<std::string> seen_keys;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen_keys.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, cb, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    fail(path, "header is not valid JSON: " + oneLine(e.what()));
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");
  if (!duplicate.empty()) fail(path, "duplicate entry " + quoteName(duplicate) + " in header");

  data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;

  std::vector<TensorInfo> tensors;
  tensors.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "\"__metadata__\" is not an object");
      for (const auto& [k, v] : entry.items())
        if (!v.is_string())
          fail(path, "\"__metadata__\" value for key " + quoteName(k) + " is not a string");
      continue;
    }
    const std::string where = "tensor " + quoteName(name) + ": ";
    if (name.empty()) fail(path, "tensor with an empty name");
    if (!entry.is_object()) fail(path, where + "entry is not an object");

    TensorInfo t;
    t.name = name;
    t.file = path;

    auto dt = entry.find("dtype");
    if (dt == entry.end()) fail(path, where + "missing \"dtype\"");
    if (!dt->is_string()) fail(path, where + "\"dtype\" is not a string");
    const auto& dtname = dt->get_ref<const std::string&>();
    auto parsed = parseDType(dtname);
    if (!parsed) fail(path, where + "unknown dtype " + quoteName(dtname));
    t.dtype = *parsed;

    auto sh = entry.find("shape");
    if (sh == entry.end()) fail(path, where + "missing \"shape\"");
    if (!sh->is_array()) fail(path, where + "\"shape\" is not an array");
    for (const auto& d : *sh) {
      if (!d.is_number_integer()) fail(path, where + "\"shape\" has a non-integer dimension " + oneLine(d.dump()));
      if (d.is_number_unsigned()) {
        const auto u = d.get<uint64_t>();
        if (u > static_cast<uint64_t>(INT64_MAX))
          fail(path, where + "dimension " + std::to_string(u) + " is too large");
        t.shape.push_back(static_cast<int64_t>(u));
      } else {
        const auto v = d.get<int64_t>();
        if (v < 0) fail(path, where + "negative dimension " + std::to_string(v) + " in shape");
        t.shape.push_back(v);
      }
    }

    auto off = entry.find("data_offsets");
    if (off == entry.end()) fail(path, where + "missing \"data_offsets\"");
    if (!off->is_array() || off->size() != 2)
      fail(path, where + "\"data_offsets\" is not an array of two integers");
    if (!isNonNegativeInteger((*off)[0]) || !isNonNegativeInteger((*off)[1]))
      fail(path, where + "\"data_offsets\" must be non-negative integers, got " + oneLine(off->dump()));
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    const std::string offs = "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
    if (t.begin > t.end) fail(path, where + "data_offsets " + offs + " are out of order");
    if (t.end > data_size)
      fail(path, where + "data_offsets " + offs + " extend past the end of the file (data section is " +
                     std::to_string(data_size) + " bytes)");

    const auto expected = byteSize(t.shape, dtypeBytes(t.dtype));
    if (!expected) fail(path, where + "shape " + shapeString(t.shape) + " is too large");
    if (*expected != t.end - t.begin)
      fail(path, where + "byte size " + std::to_string(t.end - t.begin) + " does not match shape " +
                     shapeString(t.shape) + " x " + std::string(dtypeName(t.dtype)) + " (expected " +
                     std::to_string(*expected) + " bytes)");
    tensors.push_back(std::move(t));
  }

  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Overlap check: with ranges sorted by begin, each must start at or after
  // the furthest end seen so far. Empty tensors occupy no bytes.
  uint64_t max_end = 0;
  const TensorInfo* max_owner = nullptr;
  for (const auto& t : tensors) {
    if (t.begin == t.end) continue;
    if (max_owner && t.begin < max_end)
      fail(path, "tensors " + quoteName(max_owner->name) + " and " + quoteName(t.name) + " overlap in the data section");
    max_end = t.end;
    max_owner = &t;
  }
  return tensors;
}

// ---------------------------------------------------------------------------
// Checkpoint

struct Checkpoint::State {
  std::mutex mutex;
  std::vector<Shard> shards;  // sorted by path
};

Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&& other) noexcept {
  if (this != &other) {
    Checkpoint dying(std::move(*this));  // releases our mappings
    tensors_ = std::move(other.tensors_);
    state_ = std::move(other.state_);
  }
  return *this;
}

Checkpoint::~Checkpoint() {
  if (!state_) return;
  for (auto& s : state_->shards)
    if (s.map_addr) ::munmap(s.map_addr, s.map_len);
}

namespace {

std::string readSmallFile(const std::string& path, uint64_t limit) {
  const uint64_t size = fileSizeOrFail(path);
  if (size > limit) fail(path, "file is too large (" + std::to_string(size) + " bytes)");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open file: ") + std::strerror(errno));
  std::string text(size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (static_cast<uint64_t>(in.gcount()) != size) fail(path, "read error");
  return text;
}

// A shard name from weight_map must stay inside the model directory.
bool isSafeRelativeName(const std::string& name) {
  if (name.empty()) return false;
  const fs::path p(name);
  if (p.is_absolute() || p.has_root_name()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& model_dir) {
  const fs::path dir(model_dir);
  const fs::path index_path = dir / "model.safetensors.index.json";
  const fs::path single_path = dir / "model.safetensors";

  Checkpoint ck;
  ck.state_ = std::make_unique<State>();

  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    const std::string ipath = index_path.string();
    json index;
    try {
      index = json::parse(readSmallFile(ipath, kMaxHeaderBytes));
    } catch (const json::exception& e) {
      fail(ipath, "not valid JSON: " + oneLine(e.what()));
    }
    if (!index.is_object()) fail(ipath, "not a JSON object");
    auto wm = index.find("weight_map");
    if (wm == index.end()) fail(ipath, "missing \"weight_map\"");
    if (!wm->is_object()) fail(ipath, "\"weight_map\" is not an object");
    if (wm->empty()) fail(ipath, "\"weight_map\" is empty");

    // shard file name -> names of the tensors the index puts there
    std::map<std::string, std::vector<std::string>> by_shard;
    for (const auto& [tensor, shard] : wm->items()) {
      if (!shard.is_string())
        fail(ipath, "\"weight_map\" value for tensor " + quoteName(tensor) + " is not a string");
      const auto& sname = shard.get_ref<const std::string&>();
      if (!isSafeRelativeName(sname))
        fail(ipath, "shard name " + quoteName(sname) + " for tensor " + quoteName(tensor) +
                        " is not a relative path inside the model directory");
      // "./a.safetensors" and "a.safetensors" are the same shard.
      by_shard[fs::path(sname).lexically_normal().string()].push_back(tensor);
    }

    for (auto& [sname, names] : by_shard) {
      const std::string spath = (dir / sname).string();
      if (!fs::exists(spath, ec))
        fail(ipath, "shard " + quoteName(sname) + " listed in the index does not exist (" + spath + ")");
      uint64_t data_start = 0;
      std::vector<TensorInfo> in_shard = readHeader(spath, data_start);
      std::sort(in_shard.begin(), in_shard.end(),
                [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
      for (const auto& tname : names) {
        auto it = std::lower_bound(in_shard.begin(), in_shard.end(), tname,
                                   [](const TensorInfo& a, const std::string& n) { return a.name < n; });
        if (it == in_shard.end() || it->name != tname)
          fail(ipath, "tensor " + quoteName(tname) + " is mapped to shard " + quoteName(sname) +
                          " but " + spath + " does not contain it");
        ck.tensors_.push_back(*it);
      }
      // Tensors present in a shard but absent from weight_map are ignored:
      // the index is authoritative (as in Hugging Face transformers'
      // sharded loading, which looks tensors up through weight_map).
      ck.state_->shards.push_back(Shard{spath, data_start, fileSizeOrFail(spath), nullptr, 0});
    }
  } else if (fs::exists(single_path, ec)) {
    const std::string spath = single_path.string();
    uint64_t data_start = 0;
    ck.tensors_ = readHeader(spath, data_start);
    ck.state_->shards.push_back(Shard{spath, data_start, fileSizeOrFail(spath), nullptr, 0});
  } else {
    throw SafetensorsError("no model.safetensors or model.safetensors.index.json in " + model_dir);
  }

  std::sort(ck.tensors_.begin(), ck.tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  std::sort(ck.state_->shards.begin(), ck.state_->shards.end(),
            [](const Shard& a, const Shard& b) { return a.path < b.path; });
  return ck;
}

const TensorInfo* Checkpoint::find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& a, std::string_view n) { return a.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

std::vector<std::string> Checkpoint::files() const {
  std::vector<std::string> out;
  if (state_)
    for (const auto& s : state_->shards) out.push_back(s.path);
  return out;
}

std::span<const std::byte> Checkpoint::data(const TensorInfo& info) const {
  if (!state_) throw SafetensorsError("Checkpoint::data called on a moved-from Checkpoint");
  auto& shards = state_->shards;
  auto it = std::lower_bound(shards.begin(), shards.end(), info.file,
                             [](const Shard& s, const std::string& p) { return s.path < p; });
  if (it == shards.end() || it->path != info.file)
    throw SafetensorsError(info.file + ": tensor " + quoteName(info.name) + " does not belong to this checkpoint");
  Shard& shard = *it;

  std::lock_guard<std::mutex> lock(state_->mutex);
  if (!shard.map_addr) {
    const int fd = ::open(shard.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(shard.path, std::string("cannot open shard: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      fail(shard.path, std::string("fstat failed: ") + std::strerror(err));
    }
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size != shard.file_size) {
      ::close(fd);
      fail(shard.path, "file size changed since its header was read (" + std::to_string(shard.file_size) +
                           " -> " + std::to_string(size) + " bytes)");
    }
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);  // the mapping keeps the file referenced
    if (addr == MAP_FAILED) fail(shard.path, std::string("mmap failed: ") + std::strerror(err));
    shard.map_addr = addr;
    shard.map_len = size;
  }

  const uint64_t data_size = shard.map_len - shard.data_start;
  if (info.begin > info.end || info.end > data_size)
    fail(shard.path, "tensor " + quoteName(info.name) + " byte range [" + std::to_string(info.begin) + ", " +
                         std::to_string(info.end) + ") is outside the data section");
  const auto* base = static_cast<const std::byte*>(shard.map_addr) + shard.data_start;
  return {base + info.begin, static_cast<size_t>(info.end - info.begin)};
}

// ---------------------------------------------------------------------------
// Writer

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<int64_t> shape,
                            std::vector<std::byte> bytes) {
  if (name.empty()) throw SafetensorsError("SafetensorsWriter: empty tensor name");
  if (name == "__metadata__") throw SafetensorsError("SafetensorsWriter: tensor name \"__metadata__\" is reserved");
  for (const auto& e : entries_)
    if (e.name == name) throw SafetensorsError("SafetensorsWriter: duplicate tensor " + quoteName(name));
  const auto expected = byteSize(shape, dtypeBytes(dtype));
  if (!expected)
    throw SafetensorsError("SafetensorsWriter: tensor " + quoteName(name) + " has an invalid shape " +
                           shapeString(shape));
  if (*expected != bytes.size())
    throw SafetensorsError("SafetensorsWriter: tensor " + quoteName(name) + " has " + std::to_string(bytes.size()) +
                           " bytes but shape " + shapeString(shape) + " x " + std::string(dtypeName(dtype)) +
                           " needs " + std::to_string(*expected));
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), std::move(bytes)});
}

void SafetensorsWriter::write(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    auto& md = header["__metadata__"];
    md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) md[k] = v;
  }
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    nlohmann::ordered_json t = nlohmann::ordered_json::object();
    t["dtype"] = std::string(dtypeName(e.dtype));
    t["shape"] = e.shape;
    t["data_offsets"] = {offset, offset + e.bytes.size()};
    offset += e.bytes.size();
    header[e.name] = std::move(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  unsigned char len_bytes[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(n >> (8 * i));

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, std::string("cannot create: ") + std::strerror(errno));
  auto writeAll = [&](const void* p, size_t len) {
    const auto* c = static_cast<const char*>(p);
    while (len > 0) {
      const ssize_t w = ::write(fd, c, len);
      if (w < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        fail(tmp, std::string("write failed: ") + std::strerror(err));
      }
      c += w;
      len -= static_cast<size_t>(w);
    }
  };
  writeAll(len_bytes, 8);
  writeAll(text.data(), text.size());
  for (const auto& e : entries_)
    if (!e.bytes.empty()) writeAll(e.bytes.data(), e.bytes.size());
  int err = ::fsync(fd) != 0 ? errno : 0;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    fail(tmp, std::string("flush failed: ") + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    ::unlink(tmp.c_str());
    fail(path, std::string("cannot rename ") + tmp + " into place: " + std::strerror(rename_err));
  }
}

}  // namespace llmc::weights
