// Integer helpers shared by the runtime.
#pragma once

#include <cstdint>

namespace llmc {

/// a / b rounded up (a >= 0, b > 0): pages for a number of tokens, and the like.
constexpr int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

} // namespace llmc
