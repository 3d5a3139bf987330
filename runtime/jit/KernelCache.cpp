#include "runtime/jit/KernelCache.h"

#include "runtime/jit/Nvrtc.h"
#include "runtime/support/Hash.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

namespace llmc::jit {
namespace {

namespace fs = std::filesystem;

// Cache entry layout: key length (8 bytes), key, lowered-name length, lowered
// name, cubin. The full key is compared, so a hash collision is a miss.
bool readEntry(const fs::path &path, const std::string &key, ModuleBinary &binary) {
  std::ifstream file(path, std::ios::binary);
  if (!file)
    return false;
  auto readString = [&](std::string &out) {
    uint64_t size = 0;
    if (!file.read(reinterpret_cast<char *>(&size), 8) || size > (64u << 20))
      return false;
    out.resize(size);
    return bool(file.read(out.data(), std::streamsize(size)));
  };
  std::string storedKey, lowered;
  if (!readString(storedKey) || storedKey != key || !readString(lowered))
    return false;
  binary.cubin.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  binary.lowered_name = lowered;
  binary.from_cache = true;
  return !binary.cubin.empty();
}

void writeEntry(const fs::path &path, const std::string &key, const ModuleBinary &binary) {
  std::string entry;
  auto appendString = [&](const std::string &text) {
    const uint64_t size = text.size();
    entry.append(reinterpret_cast<const char *>(&size), 8);
    entry += text;
  };
  appendString(key);
  appendString(binary.lowered_name);
  entry.append(binary.cubin.data(), binary.cubin.size());
  writeCacheFile(path.string(), entry);
}

} // namespace

std::string defaultCacheDir() {
  if (const char *dir = std::getenv("LLMC_CACHE_DIR"); dir && *dir)
    return dir;
  if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return (fs::path(xdg) / "llmc").string();
  const char *home = std::getenv("HOME");
  return (fs::path(home && *home ? home : "/tmp") / ".cache" / "llmc").string();
}

bool writeCacheFile(const std::string &path, std::string_view contents) {
  std::error_code error;
  fs::create_directories(fs::path(path).parent_path(), error);
  // Unique to the writer: processes and compile threads may write at once.
  const std::string temporary = path + ".tmp" + std::to_string(getpid()) + "." +
                                std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    file.write(contents.data(), std::streamsize(contents.size()));
    if (file.flush()) {
      file.close();
      fs::rename(temporary, path, error);
      if (!error)
        return true;
    }
  }
  fs::remove(temporary, error);
  return false;
}

std::vector<ModuleBinary> compileModules(const plan::Plan &plan, const std::string &arch,
                                         const std::string &cache_dir,
                                         const std::vector<ModuleSource> &extra) {
  std::vector<ModuleSource> specs;
  const size_t count = plan.kernels()->size() + extra.size();
  std::vector<ModuleBinary> binaries(count);
  std::vector<bool> precompiled(count, false);
  // A binary the plan carries for this arch (llmc compile --arch) needs no JIT.
  auto takePrecompiled = [&](const flatbuffers::Vector<flatbuffers::Offset<plan::Cubin>> *cubins) {
    if (cubins)
      for (const plan::Cubin *cubin : *cubins)
        if (cubin->arch()->string_view() == arch) {
          binaries[specs.size()] = {{cubin->data()->begin(), cubin->data()->end()},
                                    cubin->lowered_name()->str(), true};
          precompiled[specs.size()] = true;
        }
  };
  auto optionsOf = [](const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>> *options) {
    std::vector<std::string> out;
    if (options)
      for (const auto *option : *options)
        out.push_back(option->str());
    return out;
  };
  for (const plan::KernelModule *kernel : *plan.kernels()) {
    takePrecompiled(kernel->cubins());
    specs.push_back({kernel->name()->str(), kernel->source()->str(), kernel->entries()->Get(0)->str(),
                     optionsOf(kernel->options())});
  }
  // A runtime module's stored binary counts only when it was compiled from
  // exactly this source, entry and options.
  for (const ModuleSource &module : extra) {
    if (plan.runtime_modules())
      for (const plan::RuntimeModule *stored : *plan.runtime_modules())
        if (stored->name()->string_view() == module.name && stored->source()->string_view() == module.source &&
            stored->entry()->string_view() == module.entry && optionsOf(stored->options()) == module.options)
          takePrecompiled(stored->cubins());
    specs.push_back(module);
  }
  const std::string version = nvrtcVersion();
  auto cacheKey = [&](const ModuleSource &spec) {
    std::ostringstream key;
    key << "nvrtc " << version << "\narch " << arch << "\nentry " << spec.entry << "\n";
    for (const std::string &option : spec.options)
      key << "option " << option << "\n";
    key << spec.source;
    return key.str();
  };

  std::vector<std::exception_ptr> errors(specs.size());
  std::mutex next;
  size_t nextIndex = 0;
  auto worker = [&] {
    for (;;) {
      size_t i;
      {
        std::lock_guard lock(next);
        if (nextIndex == specs.size())
          return;
        i = nextIndex++;
      }
      if (precompiled[i])
        continue;
      try {
        const ModuleSource &spec = specs[i];
        const std::string key = cacheKey(spec);
        char hash[17];
        // 64 bits name the entry; the entry stores its full key, verified on load.
        std::snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)fnv1a(key));
        fs::path entry = fs::path(cache_dir) / "kernels" / (std::string(hash) + ".cubin");
        if (readEntry(entry, key, binaries[i]))
          continue;
        CompiledModule compiled = compileModule(spec.name, spec.source, {spec.entry}, spec.options, arch);
        binaries[i] = {std::move(compiled.cubin), compiled.lowered_names.at(0), false};
        writeEntry(entry, key, binaries[i]);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const size_t threads = std::min<size_t>(specs.size(), std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t)
    pool.emplace_back(worker);
  for (std::thread &thread : pool)
    thread.join();
  for (const std::exception_ptr &error : errors)
    if (error)
      std::rethrow_exception(error);
  return binaries;
}

} // namespace llmc::jit
