// The kernel catalog's launch geometry and NVRTC names.

#include "kernels/Catalog.h"
#include "kernels/geometry.h"
#include "kernels/paged_attention.cuh"

#include <gtest/gtest.h>

#include <set>

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
// kernel must wait first thing (kernels/common.cuh), letting the next one
// start after its wait or, for the kernels that feed GEMMs, at once.
TEST(KernelGeometry, EveryKernelWaitsForThePreviousOne) {
  for (const llmc::kernels::KernelTemplate &kernel : llmc::kernels::allTemplates()) {
    const std::string_view text = llmc::kernels::embeddedFile(std::string(kernel.name) + ".cuh");
    const size_t entry = text.find("__global__");
    ASSERT_NE(entry, std::string_view::npos) << kernel.name;
    const std::string_view firstStatement = "{\n  begin_after_previous_kernels(";
    const std::string_view body = text.substr(text.find("{\n", entry));
    EXPECT_EQ(body.substr(0, firstStatement.size()), firstStatement) << kernel.name;
    const std::string_view call = body.substr(firstStatement.size(), body.find('\n', 2) - firstStatement.size());
    EXPECT_TRUE(call == ");" || call == "NextKernel::kAtOnce);") << kernel.name << ": " << call;
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
  EXPECT_EQ(shape.max_cluster, 16);
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
  // Beyond the portable 8 only while every block has a multiprocessor.
  EXPECT_EQ(cluster_blocks(2, 16, 132), 16);   // decode batch 1 of 8 kv heads: 2 block rows
  EXPECT_EQ(cluster_blocks(8, 16, 132), 16);   // batch 4
  EXPECT_EQ(cluster_blocks(9, 16, 132), 8);    // 144 blocks would exceed 132
  EXPECT_EQ(cluster_blocks(16, 16, 132), 8);   // batch 8
  EXPECT_EQ(cluster_blocks(2, 16, 16), 8);     // a small GPU
}

// The address a wgmma operand descriptor gives element (row, col) of a
// 128-byte-swizzled operand (PTX ISA, canonical layouts): K-major rows are
// n (col = k, 16-bit elements), MN-major rows are k (col = n); 8 rows of
// 128 bytes a group, then the swizzle XORs address bits 4-6 with bits 7-9.
unsigned operandAddress(unsigned long long desc, bool mn_major, int row, int col) {
  EXPECT_EQ(desc >> 62, 1u) << "128-byte swizzle";
  const unsigned start = unsigned(desc & 0x3fff) << 4;
  const unsigned lbo = unsigned((desc >> 16) & 0x3fff) << 4;
  const unsigned sbo = unsigned((desc >> 32) & 0x3fff) << 4;
  const unsigned linear = start + unsigned(row / 8) * sbo + unsigned(row % 8) * 128 +
                          (mn_major ? unsigned(col / 64) * lbo + unsigned(col % 64) * 2 : unsigned(col) * 2);
  return linear ^ (((linear >> 7) & 7) << 4);
}

// The wgmma prefill stage of paged_attention: the copies put each K and V
// element where the MMAs' descriptors read it (S = Q K^T over 16-dim
// k-steps, O = P V over 16-key k-steps and 64-dim column blocks), and the
// K and V rows of its 64 keys fill the stage without overlap.
template <int HEAD_DIM>
void expectWgmmaStageLayout() {
  using Stage = llmc_kernels::SwizzledStage<HEAD_DIM>;
  constexpr unsigned base = 4 * 1024;  // any 1024-byte-aligned stage
  // Where copy_page puts dim d of key j of the stage (page j / 16).
  auto written = [](unsigned rows, int key, int dim) {
    return rows + Stage::page_rows(key / 16) + Stage::offset(key % 16, dim / 8) + unsigned(dim % 8) * 2;
  };
  for (int st = 0; st < HEAD_DIM / 16; ++st) {
    const auto desc = Stage::descriptor(base + Stage::k_step(st));
    EXPECT_EQ((desc >> 49) & 7, 0u) << "base offset";
    for (int key = 0; key < 64; ++key)
      for (int k = 0; k < 16; ++k)
        ASSERT_EQ(operandAddress(desc, false, key, k), written(base, key, 16 * st + k))
            << "K, k-step " << st << ", key " << key << ", dim " << 16 * st + k;
  }
  for (int h = 0; h < HEAD_DIM / 64; ++h)
    for (int p = 0; p < 4; ++p) {
      const auto desc = Stage::descriptor(base + Stage::v_step(h, p));
      for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 64; ++n)
          ASSERT_EQ(operandAddress(desc, true, k, n), written(base + Stage::V_ROWS, 16 * p + k, 64 * h + n))
              << "V, page " << p << ", key " << k << ", dim " << 64 * h + n;
    }
  // The K and V rows of the 64 keys fill the stage, each byte once.
  std::set<unsigned> bytes;
  for (unsigned rows : {0u, Stage::V_ROWS})
    for (int key = 0; key < 64; ++key)
      for (int chunk = 0; chunk < HEAD_DIM / 8; ++chunk)
        bytes.insert(written(rows, key, 8 * chunk));
  EXPECT_EQ(bytes.size(), size_t(Stage::BYTES / 16));
  EXPECT_EQ(*bytes.rbegin(), Stage::BYTES - 16);
}

TEST(KernelGeometry, AttentionWgmmaStageIsWhatItsDescriptorsRead) {
  expectWgmmaStageLayout<64>();
  expectWgmmaStageLayout<128>();
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
