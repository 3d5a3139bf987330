// Fixed-size KV-cache pages with reference counts, and the prefix cache.
//
// A full page whose KV is computed can be published under the key of its
// prefix: a hash chained over the parent page's key and the page's tokens
// (the first page's parent is kRootKey). Another sequence whose tokens start
// the same way looks the pages up by the same chain and shares them instead
// of computing them again. A page is free when no sequence references it; a
// free page that holds a published prefix stays cached and is evicted, least
// recently released first, only when no never-used page is left.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace llmc::runtime {

class BlockManager {
public:
  static constexpr uint64_t kRootKey = 0;

  explicit BlockManager(int32_t num_pages);

  int32_t numPages() const { return int32_t(pages_.size()); }
  /// Pages that allocate() can hand out: never-used plus evictable cached ones.
  int32_t numFree() const { return int32_t(freePages_.size() + evictable_.size()); }
  /// Pages that hold a published prefix (referenced or not).
  int32_t numCached() const { return int32_t(byKey_.size()); }

  /// A page with reference count 1 (evicting the least recently released
  /// cached page when no other is free), or nullopt when every page is in use.
  std::optional<int32_t> allocate();
  /// Adds a reference to an allocated page.
  void retain(int32_t page);
  /// Drops a reference; the page is free again when none is left.
  void release(int32_t page);
  int32_t refCount(int32_t page) const;

  /// The key of a page holding `tokens` after the prefix whose key is `parent`.
  static uint64_t pageKey(uint64_t parent, std::span<const int32_t> tokens);
  /// The cached page with exactly these tokens after `parent`, with a
  /// reference added for the caller; nullopt when there is none.
  std::optional<int32_t> lookup(uint64_t parent, std::span<const int32_t> tokens);
  /// Offers a referenced, full page whose KV is computed. Ignored when the same
  /// prefix is already cached in another page (that one stays the shared copy).
  void publish(int32_t page, uint64_t parent, std::span<const int32_t> tokens);

private:
  struct Page {
    int32_t refs = 0;
    std::optional<uint64_t> key;  // set while the page is published
    uint64_t parent = kRootKey;
    std::vector<int32_t> tokens;  // compared on lookup: a hash match alone is not enough
    std::list<int32_t>::iterator lru;  // valid while in evictable_
  };
  void check(int32_t page) const;

  std::vector<Page> pages_;
  std::vector<int32_t> freePages_;  // never used or evicted; a stack
  std::list<int32_t> evictable_;    // cached and unreferenced, least recently released first
  std::unordered_map<uint64_t, int32_t> byKey_;
};

} // namespace llmc::runtime
