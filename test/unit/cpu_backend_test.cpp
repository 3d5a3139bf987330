// CpuBackend pieces the executor relies on besides the kernel ops.

#include "runtime/backend/cpu/CpuBackend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace {

TEST(CpuBackend, ArgmaxTakesTheLowestIndexOfTheMaximumAndSkipsNaN) {
  llmc::runtime::CpuBackend backend;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float logits[] = {
      1, 3, 2, 3,          // tie: index 1
      nan, -5, -7, nan,    // NaN first: index 1
      -1, -1, -1, -1,      // all equal: index 0
  };
  int32_t out[3] = {-1, -1, -1};
  backend.argmax(logits, 3, 4, out);
  EXPECT_EQ(out[0], 1);
  EXPECT_EQ(out[1], 1);
  EXPECT_EQ(out[2], 0);
}

TEST(CpuBackend, GraphsAreNotSupported) {
  llmc::runtime::CpuBackend backend;
  EXPECT_FALSE(backend.beginCapture());
}

} // namespace
