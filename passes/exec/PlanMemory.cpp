//===- PlanMemory.cpp - pack workspace buffers by liveness -----------------===//
//
// Every workspace buffer has R x row_bytes bytes, R being the batch's token
// (or sequence) count. Packing the row widths with first fit over program
// order gives offsets valid for any R up to the runtime's maximum: offset x
// R_max bytes into the region, so one plan serves any max batch size.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include <map>

namespace llmc {
#define GEN_PASS_DEF_PLANMEMORY
#include "passes/exec/Passes.h.inc"
} // namespace llmc

using namespace mlir;
using namespace llmc;

namespace {

/// First-fit allocator over one region, in row-byte units.
class Region {
public:
  /// Frees every block whose last use is before `position`.
  void release(int64_t position) {
    for (auto it = live.begin(); it != live.end();)
      it = it->second.lastUse < position ? live.erase(it) : std::next(it);
  }

  int64_t allocate(int64_t size, int64_t lastUse) {
    int64_t offset = 0;
    for (const auto &[start, block] : live) {  // ordered by start
      if (start - offset >= size)
        break;
      offset = std::max(offset, start + block.size);
    }
    live.emplace(offset, Block{size, lastUse});
    peak = std::max(peak, offset + size);
    return offset;
  }

  int64_t peak = 0;

private:
  struct Block {
    int64_t size;
    int64_t lastUse;
  };
  std::multimap<int64_t, Block> live;
};

struct PlanMemoryPass : public llmc::impl::PlanMemoryBase<PlanMemoryPass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    DenseMap<Operation *, int64_t> position;
    func.walk([&](Operation *op) { position[op] = int64_t(position.size()); });

    std::map<std::string, Region> regions;
    Builder builder(&getContext());
    func.walk([&](exec::AllocOp alloc) {
      int64_t start = position[alloc];
      int64_t lastUse = start;
      for (Operation *user : alloc->getUsers())
        lastUse = std::max(lastUse, position[user]);
      auto type = alloc.getResult().getType();
      Region &region = regions[type.getRows().str()];
      region.release(start);
      alloc.setOffsetAttr(builder.getI64IntegerAttr(region.allocate(type.alignedRowBytes(), lastUse)));
    });
    func->setAttr("exec.workspace_bytes_per_token", builder.getI64IntegerAttr(regions["tokens"].peak));
    func->setAttr("exec.workspace_bytes_per_seq", builder.getI64IntegerAttr(regions["seqs"].peak));
  }
};

} // namespace
