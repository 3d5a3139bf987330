// NVRTC compilation of a plan's kernel modules with an on-disk cache keyed by
// the source, entry, options, target arch and NVRTC version, so a warm start
// compiles nothing. Modules compile in parallel.
#pragma once

#include "runtime/plan/PlanFile.h"

#include <string>
#include <string_view>
#include <vector>

namespace llmc::jit {

struct ModuleBinary {
  std::vector<char> cubin;
  std::string lowered_name;  // the entry's mangled name inside the cubin
  bool from_cache = false;  // from the disk cache or precompiled in the plan
};

/// The cache directory: $LLMC_CACHE_DIR, else $XDG_CACHE_HOME/llmc, else
/// ~/.cache/llmc (the kernels/ subfolder holds the entries).
std::string defaultCacheDir();

/// Writes `contents` to the cache file at `path` whole: into a temporary file
/// renamed into place (readers never see part of it), creating the
/// directory. A cache that cannot be written only costs a later start the
/// work again: returns false and throws nothing.
bool writeCacheFile(const std::string &path, std::string_view contents);

/// A kernel module's NVRTC input (a plan's, or the runtime's own).
struct ModuleSource {
  std::string name, source, entry;  // entry: the NVRTC name expression
  std::vector<std::string> options;
};

/// Compiles (or loads from `cache_dir`, or takes the plan's precompiled
/// binary for `arch`) every kernel module of `plan` for `arch` (e.g.
/// "sm_90"), in plan order, then each of `extra`, all in parallel. Throws
/// std::runtime_error naming the module with NVRTC's log when one does not
/// compile. An unreadable or corrupt cache entry is recompiled; a cache that
/// cannot be written is skipped with no error.
std::vector<ModuleBinary> compileModules(const plan::Plan &plan, const std::string &arch,
                                         const std::string &cache_dir,
                                         const std::vector<ModuleSource> &extra = {});

} // namespace llmc::jit
