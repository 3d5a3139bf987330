// The kernel catalog's launch geometry and NVRTC names.

#include "kernels/Catalog.h"

#include <gtest/gtest.h>

namespace {

using llmc::kernels::findTemplate;
using llmc_kernels::LaunchShape;

LaunchShape launch(const char *name, std::vector<int64_t> params) {
  const auto *kernel = findTemplate(name);
  EXPECT_NE(kernel, nullptr) << name;
  EXPECT_EQ(kernel->params.size(), params.size()) << name;
  return kernel->launch(params);
}

TEST(KernelGeometry, SymExprEvaluatesCeilingDivision) {
  llmc_kernels::SymExpr e{3, 2, 1, 4};
  EXPECT_EQ(e.eval(5, 1), 5);  // ceil((15 + 2 + 1) / 4)
  EXPECT_EQ(llmc_kernels::perToken().eval(7, 2), 7);
  EXPECT_EQ(llmc_kernels::perSeq().eval(7, 2), 2);
}

TEST(KernelGeometry, RowKernelsLaunchOneBlockPerRow) {
  for (const char *name : {"embedding", "rms_norm", "add_rms_norm"}) {
    LaunchShape shape = launch(name, {4096});
    EXPECT_EQ(shape.grid_x.eval(37, 3), 37) << name;
    EXPECT_EQ(shape.grid_y.eval(37, 3), 1) << name;
    EXPECT_EQ(shape.block_threads % 32, 0) << name;
    EXPECT_LE(shape.block_threads, 1024) << name;
  }
  EXPECT_EQ(launch("gather_rows", {4096}).grid_x.eval(37, 3), 3);
}

TEST(KernelGeometry, BlockSizesFollowTheRowWidth) {
  EXPECT_EQ(launch("rms_norm", {4096}).block_threads, 512);  // 8 elements a thread
  EXPECT_EQ(launch("rms_norm", {896}).block_threads, 128);
  EXPECT_EQ(launch("rms_norm", {64}).block_threads, 32);
}

TEST(KernelGeometry, AttentionCoversEveryKvHeadOfEveryToken) {
  // One thread-block cluster of 8 blocks (__cluster_dims__(8, 1, 1) in
  // kernels/paged_attention.cuh) per (token, kv head): grid.x must stay a
  // multiple of the cluster size.
  LaunchShape shape = launch("paged_attention", {32, 8, 128, 16});
  EXPECT_EQ(shape.grid_x.eval(100, 4), 100 * 8);
  EXPECT_EQ(shape.grid_x.eval(37, 5) % 8, 0);
  EXPECT_EQ(shape.grid_y.eval(100, 4), 8);
  EXPECT_EQ(shape.block_threads, 128);
  EXPECT_EQ(shape.shared_bytes, 0);
}

TEST(KernelGeometry, SiluMulCoversAllColumns) {
  LaunchShape shape = launch("silu_mul", {14336});
  int64_t blocks = shape.grid_x.eval(10, 1) * shape.grid_y.eval(10, 1);
  EXPECT_GE(blocks * shape.block_threads * 8, 10 * 14336);
}

TEST(KernelGeometry, NameExpressionsSpellCudaTypes) {
  const auto *kernel = findTemplate("rope_kv_write");
  ASSERT_NE(kernel, nullptr);
  std::vector<int64_t> params = {32, 8, 128, 128, 16};
  EXPECT_EQ(llmc::kernels::nameExpression(*kernel, params, "bf16"),
            "llmc_kernels::rope_kv_write<32, 8, 128, 128, 16, __nv_bfloat16>");
  EXPECT_THROW(llmc::kernels::nameExpression(*kernel, params, "i8"), std::invalid_argument);
  EXPECT_EQ(findTemplate("no_such_kernel"), nullptr);
}

TEST(KernelGeometry, ModuleSourcesAreSelfContained) {
  for (const auto &kernel : llmc::kernels::allTemplates()) {
    std::string source = llmc::kernels::moduleSource(kernel);
    EXPECT_NE(source.find("struct SymExpr"), std::string::npos) << kernel.name;
    EXPECT_NE(source.find(std::string(kernel.name) + "("), std::string::npos) << kernel.name;
  }
}

} // namespace
