// CpuBackend pieces the executor relies on besides the kernel ops.

#include "runtime/backend/cpu/CpuBackend.h"

#include <gtest/gtest.h>

namespace {

TEST(CpuBackend, GraphsAreNotSupported) {
  llmc::runtime::CpuBackend backend;
  EXPECT_FALSE(backend.beginCapture());
}

} // namespace
