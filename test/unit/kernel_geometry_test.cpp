// The kernel catalog's launch geometry and NVRTC names.

#include "kernels/Catalog.h"
#include "kernels/geometry.h"
#include "kernels/paged_attention.cuh"

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

// The plan marks every catalog kernel waits_for_previous, and the CUDA
// backend then launches it before the previous kernel has finished: each
// kernel must wait first thing (kernels/common.cuh).
TEST(KernelGeometry, EveryKernelWaitsForThePreviousOne) {
  for (const llmc::kernels::KernelTemplate &kernel : llmc::kernels::allTemplates()) {
    const std::string_view text = llmc::kernels::embeddedFile(std::string(kernel.name) + ".cuh");
    const size_t entry = text.find("__global__");
    ASSERT_NE(entry, std::string_view::npos) << kernel.name;
    const std::string_view firstStatement = "{\n  begin_after_previous_kernels();\n";
    EXPECT_EQ(text.substr(text.find("{\n", entry), firstStatement.size()), firstStatement) << kernel.name;
  }
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

TEST(KernelGeometry, AttentionCoversEveryTileOfEveryKvHead) {
  // Llama-3-8B: a GQA group of 4 heads, so a tile holds 4 tokens (16 rows).
  EXPECT_EQ(llmc_kernels::paged_attention_tile_tokens(32, 8), 4);
  EXPECT_EQ(llmc_kernels::paged_attention_tile_tokens(28, 4), 2);    // Qwen2-7B: 7 heads
  EXPECT_EQ(llmc_kernels::paged_attention_tile_tokens(32, 32), 16);  // MHA
  EXPECT_EQ(llmc_kernels::paged_attention_tile_tokens(64, 2), 1);    // 32 heads
  LaunchShape shape = launch("paged_attention", {32, 8, 128, 16});
  // Decode (one token a sequence): one tile per sequence.
  EXPECT_EQ(shape.grid_x.eval(100, 100), 100);
  // Prefill of one 4096-token sequence: 1024 tiles (and a spare that exits).
  EXPECT_EQ(shape.grid_x.eval(4096, 1), 1025);
  // Ragged: sequences of 5, 1 and 2 tokens need 2 + 1 + 1 tiles; the grid
  // counts ceil((8 + 3 * 3) / 4) = 5, enough for any split of 8 tokens.
  EXPECT_EQ(shape.grid_x.eval(8, 3), 5);
  // One warp per kv head, 4 a block: 2 block rows for 8 kv heads.
  EXPECT_EQ(shape.grid_y.eval(100, 4), 2);
  EXPECT_EQ(shape.block_threads, 128);
  // Each warp's ring: 3 pages of 16 keys of K and V, 128 dims of 2 bytes.
  EXPECT_EQ(shape.shared_bytes, 4 * 3 * 2 * 16 * 128 * 2);
  // Without a ring (fp32; head dims the tensor-core walk does not take), a
  // warp needs room for its rows' partials only: m, l and the accumulators.
  EXPECT_EQ(llmc_kernels::paged_attention_warp_bytes(32, 8, 128, 16, 4), 16 * 130 * 4);
  EXPECT_EQ(launch("paged_attention", {32, 8, 80, 16}).shared_bytes, 4 * 16 * 82 * 4);
  // 64-dim heads (Llama-3.2-1B): exactly 48 KB, which the backend opts in to.
  EXPECT_EQ(launch("paged_attention", {32, 8, 64, 16}).shared_bytes, 48 * 1024);
  // Rings of 320-dim heads would not fit beside each other: the SIMT walk.
  EXPECT_TRUE(llmc_kernels::paged_attention_uses_mma(16, 4, 256, 16, 2));
  EXPECT_FALSE(llmc_kernels::paged_attention_uses_mma(16, 4, 320, 16, 2));
  EXPECT_EQ(launch("paged_attention", {16, 4, 320, 16}).shared_bytes, 4 * 16 * 322 * 4);
  EXPECT_EQ(shape.max_cluster, 8);
  // 2 kv heads (Qwen2.5-0.5B): blocks of 2 warps; 6: 2 rows, the last half full.
  EXPECT_EQ(launch("paged_attention", {14, 2, 64, 16}).block_threads, 64);
  EXPECT_EQ(launch("paged_attention", {14, 2, 64, 16}).grid_y.eval(1, 1), 1);
  EXPECT_EQ(launch("paged_attention", {24, 6, 128, 16}).grid_y.eval(1, 1), 2);
}

TEST(KernelGeometry, ClustersSplitItemsOnlyWhileTheGridIsSmall) {
  using llmc_kernels::cluster_blocks;
  // 132 multiprocessors (H100/H200): up to 264 blocks in all.
  EXPECT_EQ(cluster_blocks(8, 8, 132), 8);    // decode batch 1, 8 kv heads
  EXPECT_EQ(cluster_blocks(64, 8, 132), 4);   // batch 8
  EXPECT_EQ(cluster_blocks(128, 8, 132), 2);  // batch 16
  EXPECT_EQ(cluster_blocks(256, 8, 132), 1);  // batch 32 and up
  EXPECT_EQ(cluster_blocks(8, 2, 132), 2);    // never above the kernel's maximum
  EXPECT_EQ(cluster_blocks(8, 1, 132), 1);
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
