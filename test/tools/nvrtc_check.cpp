// llmc-nvrtc-check ENGINE_DIR...: compiles every kernel module of each
// engine's plan for sm_90 with NVRTC (no GPU needed). A failure names the
// module and prints NVRTC's log. Modules with identical source and entry are
// compiled once.

#include "runtime/jit/Nvrtc.h"
#include "runtime/plan/PlanFile.h"

#include <iostream>
#include <set>
#include <string>

int main(int argc, char **argv) {
  if (argc < 2) {
    std::cerr << "usage: llmc-nvrtc-check ENGINE_DIR...\n";
    return 2;
  }
  std::set<std::string> compiled;
  int failures = 0, modules = 0;
  for (int i = 1; i < argc; ++i) {
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
                                                 entries, options, "sm_90");
          std::cout << "ok    " << kernel->name()->str() << " (" << module.cubin.size()
                    << " bytes of sm_90 cubin)\n";
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
