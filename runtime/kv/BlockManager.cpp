#include "runtime/kv/BlockManager.h"

#include "runtime/support/Hash.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace llmc::runtime {

BlockManager::BlockManager(int32_t num_pages) {
  if (num_pages <= 0)
    throw std::invalid_argument("the KV cache needs at least one page");
  pages_.resize(size_t(num_pages));
  for (int32_t page = num_pages - 1; page >= 0; --page)
    freePages_.push_back(page);
}

std::optional<int32_t> BlockManager::allocate() {
  int32_t page;
  if (!freePages_.empty()) {
    page = freePages_.back();
    freePages_.pop_back();
  } else if (!evictable_.empty()) {
    page = evictable_.front();
    evictable_.pop_front();
    Page &evicted = pages_[size_t(page)];
    byKey_.erase(*evicted.key);
    evicted.key.reset();
    evicted.tokens.clear();
  } else {
    return std::nullopt;
  }
  pages_[size_t(page)].refs = 1;
  return page;
}

void BlockManager::check(int32_t page) const {
  if (page < 0 || size_t(page) >= pages_.size() || pages_[size_t(page)].refs == 0)
    throw std::logic_error("KV page " + std::to_string(page) + " is not allocated");
}

void BlockManager::retain(int32_t page) {
  check(page);
  ++pages_[size_t(page)].refs;
}

void BlockManager::release(int32_t page) {
  check(page);
  Page &entry = pages_[size_t(page)];
  if (--entry.refs > 0)
    return;
  if (entry.key)
    entry.lru = evictable_.insert(evictable_.end(), page);
  else
    freePages_.push_back(page);
}

int32_t BlockManager::refCount(int32_t page) const {
  return page >= 0 && size_t(page) < pages_.size() ? pages_[size_t(page)].refs : 0;
}

uint64_t BlockManager::pageKey(uint64_t parent, std::span<const int32_t> tokens) {
  // FNV-1a over the parent key's and the token ids' bytes, then a final mix
  // so that keys differing in few bits spread over the hash table.
  uint64_t hash = fnv1a({reinterpret_cast<const char *>(&parent), sizeof(parent)});
  hash = fnv1a({reinterpret_cast<const char *>(tokens.data()), tokens.size_bytes()}, hash);
  hash ^= hash >> 31;
  return hash == kRootKey ? 1 : hash;
}

std::optional<int32_t> BlockManager::lookup(uint64_t parent, std::span<const int32_t> tokens) {
  auto found = byKey_.find(pageKey(parent, tokens));
  if (found == byKey_.end())
    return std::nullopt;
  const int32_t page = found->second;
  Page &entry = pages_[size_t(page)];
  if (entry.parent != parent || !std::equal(tokens.begin(), tokens.end(), entry.tokens.begin(),
                                            entry.tokens.end()))
    return std::nullopt;
  if (entry.refs++ == 0)
    evictable_.erase(entry.lru);
  return page;
}

void BlockManager::publish(int32_t page, uint64_t parent, std::span<const int32_t> tokens) {
  check(page);
  Page &entry = pages_[size_t(page)];
  if (entry.key)
    return;  // already published
  const uint64_t key = pageKey(parent, tokens);
  if (!byKey_.emplace(key, page).second)
    return;
  entry.key = key;
  entry.parent = parent;
  entry.tokens.assign(tokens.begin(), tokens.end());
}

} // namespace llmc::runtime
