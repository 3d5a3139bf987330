// libFuzzer harness for the plan reader: any byte string is either a verified
// plan, every part of which can then be read safely, or a PlanError.
// Build and run with tools/fuzz-plan.sh (clang, -fsanitize=fuzzer,address,undefined).

#include "runtime/plan/PlanFile.h"

#include <cstdint>
#include <span>

namespace {

// Reads every field a runtime would, so that the sanitizers see any access
// the verifier let through.
size_t touch(const llmc::plan::Plan &plan) {
  using namespace llmc::plan;
  // Unsigned sums: the values are fuzzed, and wrapping is fine here.
  size_t sum = size_t(plan.model()->vocab_size()) + size_t(plan.kv_cache()->page_size());
  for (const KernelModule *kernel : *plan.kernels()) {
    sum += kernel->source()->size() + kernel->entries()->Get(0)->size();
    for (const SymExpr *dim : *kernel->grid())
      sum += size_t(dim->tokens()) + size_t(dim->seqs()) + size_t(dim->constant()) + size_t(dim->divisor());
  }
  return sum;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  try {
    llmc::plan::PlanFile file = llmc::plan::PlanFile::fromBytes({data, size}, "fuzz input");
    volatile size_t sink = touch(file.plan());
    for (const llmc::plan::RankProgram *rank : *file.plan().ranks()) {
      for (const llmc::plan::Step *step : *rank->steps())
        if (const llmc::plan::Launch *launch = step->op_as_Launch())
          for (int32_t buffer : *launch->buffers())
            sink = sink + size_t(rank->buffers()->Get(uint32_t(buffer))->cols());
      for (const llmc::plan::Parameter *param : *rank->parameters())
        for (const llmc::plan::WeightSource *source : *param->sources())
          sink = sink + source->name()->size() + (source->shape() ? source->shape()->size() : 0);
    }
    (void)sink;
  } catch (const llmc::plan::PlanError &) {
  }
  return 0;
}
