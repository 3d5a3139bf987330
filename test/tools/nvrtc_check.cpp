// llmc-nvrtc-check [--arch ARCH] ENGINE_DIR...: compiles every kernel module
// of each engine's plan for ARCH (default sm_90a, what the CUDA backend
// compiles for on an H100/H200) with NVRTC (no GPU needed). A failure names
// the module and prints NVRTC's log. Modules with identical source and entry
// are compiled once.
//
// llmc-nvrtc-check --precompiled ENGINE_DIR: checks that the runtime's kernel
// loading (jit::compileModules, with the runtime's own modules as the CUDA
// backend passes them) takes every module from the plan's precompiled sm_90a
// binary, byte for byte, and compiles nothing.

#include "runtime/jit/KernelCache.h"
#include "runtime/jit/Nvrtc.h"
#include "runtime/jit/RuntimeModules.h"
#include "runtime/plan/PlanFile.h"

#include <cstring>
#include <filesystem>
#include <iostream>
#include <unistd.h>
#include <set>
#include <string>

namespace {

constexpr const char *kHopper = "sm_90a";

int checkPrecompiled(const char *engine) {
  llmc::plan::PlanFile file = llmc::plan::PlanFile::load(engine);
  const std::filesystem::path cache =
      std::filesystem::temp_directory_path() / ("llmc-nvrtc-check-" + std::to_string(getpid()));
  std::filesystem::remove_all(cache);
  auto binaries = llmc::jit::compileModules(file.plan(), kHopper, cache.string(), llmc::jit::runtimeModules());
  const size_t planModules = file.plan().kernels()->size();
  int precompiled = 0;
  for (size_t i = 0; i < binaries.size(); ++i) {
    const auto *cubins = i < planModules
                             ? file.plan().kernels()->Get(uint32_t(i))->cubins()
                             : file.plan().runtime_modules()
                                   ? file.plan().runtime_modules()->Get(uint32_t(i - planModules))->cubins()
                                   : nullptr;
    const bool same = cubins && cubins->size() > 0 &&
                      binaries[i].cubin.size() == cubins->Get(0)->data()->size() &&
                      std::memcmp(binaries[i].cubin.data(), cubins->Get(0)->data()->data(),
                                  binaries[i].cubin.size()) == 0;
    precompiled += same && binaries[i].from_cache;
  }
  const bool compiledNothing = !std::filesystem::exists(cache);
  std::cout << precompiled << " of " << binaries.size() << " modules taken precompiled for " << kHopper << ", "
            << (compiledNothing ? "nothing compiled" : "something was compiled") << "\n";
  // A runtime whose sampling module differs from the one stored compiles its own.
  std::vector<llmc::jit::ModuleSource> changed = llmc::jit::runtimeModules();
  changed[llmc::jit::kSampleRowsModule].source += "\n// another version\n";
  auto changedFromCache = [&] {
    return llmc::jit::compileModules(file.plan(), kHopper, cache.string(), changed)
        .at(planModules + llmc::jit::kSampleRowsModule)
        .from_cache;
  };
  const bool recompiled = !changedFromCache();
  // Its binary went to the disk cache, and the next load reads it from there.
  const bool cachedThen = changedFromCache();
  std::filesystem::remove_all(cache);
  std::cout << "a changed runtime module is " << (recompiled ? "compiled" : "taken precompiled") << ", then "
            << (cachedThen ? "read from the disk cache" : "compiled again") << "\n";
  return precompiled == int(binaries.size()) && compiledNothing && recompiled && cachedThen ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  if (argc == 3 && std::string(argv[1]) == "--precompiled") {
    try {
      return checkPrecompiled(argv[2]);
    } catch (const std::exception &error) {
      std::cout << "FAIL  " << error.what() << "\n";
      return 1;
    }
  }
  std::string arch = kHopper;
  int first = 1;
  if (argc > 2 && std::string(argv[1]) == "--arch") {
    arch = argv[2];
    first = 3;
  }
  if (argc <= first) {
    std::cerr << "usage: llmc-nvrtc-check [--arch ARCH] ENGINE_DIR...\n";
    return 2;
  }
  std::set<std::string> compiled;
  int failures = 0, modules = 0;
  for (int i = first; i < argc; ++i) {
    try {
      llmc::plan::PlanFile file = llmc::plan::PlanFile::load(argv[i]);
      for (const llmc::plan::KernelModule *kernel : *file.plan().kernels()) {
        std::vector<std::string> entries, options;
        for (const auto *entry : *kernel->entries())
          entries.push_back(entry->str());
        for (const auto *option : *kernel->options())
          options.push_back(option->str());
        std::string key = kernel->source()->str() + "\n//" + entries[0];
        if (!compiled.insert(key).second)
          continue;
        ++modules;
        try {
          auto module = llmc::jit::compileModule(kernel->name()->str(), kernel->source()->str(),
                                                 entries, options, arch);
          std::cout << "ok    " << kernel->name()->str() << " (" << module.cubin.size()
                    << " bytes of " << arch << " cubin)\n";
        } catch (const std::exception &error) {
          ++failures;
          std::cout << "FAIL  " << argv[i] << ": " << error.what() << "\n";
        }
      }
    } catch (const std::exception &error) {
      ++failures;
      std::cout << "FAIL  " << argv[i] << ": " << error.what() << "\n";
    }
  }
  std::cout << modules << " modules compiled with NVRTC " << llmc::jit::nvrtcVersion() << ", "
            << failures << " failed\n";
  return failures ? 1 : 0;
}
