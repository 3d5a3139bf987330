// FNV-1a: a small hash that is the same on every platform and build (for
// cache keys and seeds that must not change between runs).
#pragma once

#include <cstdint>
#include <string_view>

namespace llmc {

constexpr uint64_t kFnv1aBasis = 1469598103934665603ull;

/// Continues from `hash` (a previous result), so several pieces hash as one.
inline uint64_t fnv1a(std::string_view text, uint64_t hash = kFnv1aBasis) {
  for (unsigned char c : text)
    hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

} // namespace llmc
