#include "runtime/kv/BlockManager.h"

#include <stdexcept>
#include <string>

namespace llmc::runtime {

BlockManager::BlockManager(int32_t num_pages) {
  if (num_pages <= 0)
    throw std::invalid_argument("the KV cache needs at least one page");
  refCounts.assign(size_t(num_pages), 0);
  for (int32_t page = num_pages - 1; page >= 0; --page)
    freePages.push_back(page);
}

std::optional<int32_t> BlockManager::allocate() {
  if (freePages.empty())
    return std::nullopt;
  int32_t page = freePages.back();
  freePages.pop_back();
  refCounts[size_t(page)] = 1;
  return page;
}

void BlockManager::check(int32_t page) const {
  if (page < 0 || size_t(page) >= refCounts.size() || refCounts[size_t(page)] == 0)
    throw std::logic_error("KV page " + std::to_string(page) + " is not allocated");
}

void BlockManager::retain(int32_t page) {
  check(page);
  ++refCounts[size_t(page)];
}

void BlockManager::release(int32_t page) {
  check(page);
  if (--refCounts[size_t(page)] == 0)
    freePages.push_back(page);
}

int32_t BlockManager::refCount(int32_t page) const {
  return page >= 0 && size_t(page) < refCounts.size() ? refCounts[size_t(page)] : 0;
}

} // namespace llmc::runtime
