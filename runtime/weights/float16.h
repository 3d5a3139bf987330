// Header-only conversions between float and the two 16-bit float formats used
// by checkpoints: bfloat16 and IEEE 754 binary16 ("half"). All conversions
// from float round to nearest, ties to even, keep NaNs NaN (quiet) and handle
// infinities; half also handles subnormals and overflow to infinity.
// Shared by the safetensors library and the kernels' CPU reference code.
#pragma once

#include <bit>
#include <cstdint>

namespace llmc::weights {

// float -> bfloat16 bits. Round to nearest even; NaN stays NaN (quiet bit set
// so that truncating a signalling NaN's payload cannot turn it into infinity).
constexpr uint16_t floatToBf16(float f) noexcept {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u)  // NaN
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  const uint32_t lsb = (u >> 16) & 1u;
  const uint32_t rounded = u + 0x7FFFu + lsb;  // may carry into exponent: correct (-> next binade or inf)
  return static_cast<uint16_t>(rounded >> 16);
}

// bfloat16 bits -> float (exact).
constexpr float bf16ToFloat(uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

// float -> IEEE binary16 bits. Round to nearest even, including into and out
// of the subnormal range; values >= 65520 round to infinity.
constexpr uint16_t floatToHalf(float f) noexcept {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t absu = u & 0x7FFFFFFFu;

  if (absu >= 0x7F800000u) {  // inf or NaN
    if (absu == 0x7F800000u) return sign | 0x7C00u;
    // NaN: keep the top payload bits, force quiet so the result is never inf.
    return static_cast<uint16_t>(sign | 0x7E00u | ((absu >> 13) & 0x03FFu));
  }

  const int32_t exp = static_cast<int32_t>(absu >> 23) - 127;  // unbiased
  uint32_t mant = absu & 0x007FFFFFu;

  if (exp > 15) return sign | 0x7C00u;  // overflow (>= 65536) -> inf

  if (exp >= -14) {
    // Normal half range (before rounding). 23 -> 10 mantissa bits.
    uint32_t h = (static_cast<uint32_t>(exp + 15) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry to inf: correct
    return static_cast<uint16_t>(sign | h);
  }

  // Subnormal half (or zero). Value = 1.mant * 2^exp; half subnormal unit is 2^-24.
  if (exp < -25) return sign;  // < 2^-25: rounds to zero (2^-25 exactly is a tie -> 0, even)
  if (absu == 0) return sign;
  mant |= 0x00800000u;                                   // implicit bit
  const uint32_t shift = static_cast<uint32_t>(-exp - 14 + 13);  // 14..24
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (h & 1u))) ++h;  // may carry to smallest normal: correct
  return static_cast<uint16_t>(sign | h);
}

// IEEE binary16 bits -> float (exact).
constexpr float halfToFloat(uint16_t h) noexcept {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x03FFu;
  if (exp == 0x1Fu)  // inf / NaN
    return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  if (exp != 0)  // normal
    return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);  // +-0
  // Subnormal: normalise.
  uint32_t e = 113;  // exponent of 2^-14 biased for float (127 - 14)
  while ((mant & 0x0400u) == 0) {
    mant <<= 1;
    --e;
  }
  mant &= 0x03FFu;
  return std::bit_cast<float>(sign | (e << 23) | (mant << 13));
}

}  // namespace llmc::weights
