// Fixed-size KV-cache pages with reference counts. A page is free when its
// count drops to zero; prefix sharing will retain pages of other sequences.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace llmc::runtime {

class BlockManager {
public:
  explicit BlockManager(int32_t num_pages);

  int32_t numPages() const { return int32_t(refCounts.size()); }
  int32_t numFree() const { return int32_t(freePages.size()); }

  /// A free page with reference count 1, or nullopt when none is left.
  std::optional<int32_t> allocate();
  /// Adds a reference to an allocated page.
  void retain(int32_t page);
  /// Drops a reference; the page is free again when none is left.
  void release(int32_t page);
  int32_t refCount(int32_t page) const;

private:
  void check(int32_t page) const;

  std::vector<int32_t> refCounts;
  std::vector<int32_t> freePages;  // a stack: recently freed pages are reused first
};

} // namespace llmc::runtime
