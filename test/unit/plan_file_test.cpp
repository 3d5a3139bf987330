// PlanFile: a valid plan loads; truncated, corrupted, foreign, newer-major
// and internally inconsistent plans are PlanErrors, never crashes.

#include "runtime/plan/PlanFile.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <unistd.h>

namespace {

using namespace llmc::plan;

struct PlanShape {
  int schema_major = kSchemaMajor;
  int launch_kernel = 0;   // index the single launch uses
  int launch_buffer = 0;   // buffer index the launch passes
  int param_index = 0;     // parameter index of the weight buffer
  int64_t hidden = 16;     // the rms_norm kernel's HIDDEN template parameter
  int max_cluster = 1;     // thread-block cluster size the kernel accepts
};

// A one-kernel, one-launch, one-GEMM plan, like a tiny compiled model.
std::vector<uint8_t> buildPlan(const PlanShape &shape = {}) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<int64_t> eos = {2};
  auto meta = CreateModelMetaDirect(fbb, "LlamaForCausalLM", "llama", 32, 16, 1, 2, 1, 8, 64,
                                    DType::f32, 1, &eos);
  auto kv = CreateKvCacheSpec(fbb, 1, 1, 8, 16, DType::f32);
  std::vector<flatbuffers::Offset<flatbuffers::String>> entries = {
      fbb.CreateString("llmc_kernels::rms_norm<16, float>")};
  std::vector<SymExpr> grid = {SymExpr(1, 0, 0, 1), SymExpr(0, 0, 1, 1), SymExpr(0, 0, 1, 1)};
  std::vector<int64_t> params = {shape.hidden};
  std::vector<flatbuffers::Offset<KernelModule>> kernels = {CreateKernelModuleDirect(
      fbb, "rms_norm_16_f32", "// source", &entries, nullptr, "rms_norm", &params, DType::f32, &grid,
      32, 0, nullptr, shape.max_cluster)};
  std::vector<int64_t> weightShape = {16};
  std::vector<flatbuffers::Offset<WeightSource>> sources = {
      CreateWeightSourceDirect(fbb, "norm.weight", &weightShape)};
  std::vector<flatbuffers::Offset<Parameter>> parameters = {
      CreateParameterDirect(fbb, "norm.weight", DType::f32, &weightShape, &sources, 0)};
  std::vector<flatbuffers::Offset<Buffer>> buffers = {
      CreateBufferDirect(fbb, BufferKind::workspace, nullptr, -1, RowCount::tokens, 16, DType::f32, 0),
      CreateBufferDirect(fbb, BufferKind::parameter, nullptr, shape.param_index, RowCount::fixed, 16,
                         DType::f32, 0),
      CreateBufferDirect(fbb, BufferKind::workspace, nullptr, -1, RowCount::tokens, 16, DType::f32, 64),
  };
  std::vector<int32_t> args = {shape.launch_buffer, 1, 2};
  std::vector<Scalar> scalars = {Scalar(ScalarKind::f32, 1e-5f, 0), Scalar(ScalarKind::num_tokens, 0, 0)};
  auto launch = CreateLaunchDirect(fbb, shape.launch_kernel, &args, &scalars);
  std::vector<flatbuffers::Offset<Step>> steps = {CreateStep(fbb, StepOp::Launch, launch.Union(), 0)};
  std::vector<flatbuffers::Offset<Output>> outputs = {CreateOutputDirect(fbb, "logits", 2)};
  std::vector<flatbuffers::Offset<RankProgram>> ranks = {CreateRankProgramDirect(
      fbb, 0, 0, 0, &parameters, nullptr, &buffers, &steps, &outputs, 128, 0)};
  auto root = CreatePlanDirect(fbb, shape.schema_major, 0, "test", meta, CreateParallelLayout(fbb),
                               kv, &kernels, &ranks, 64, 4);
  FinishSizePrefixedPlanBuffer(fbb, root);
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::string errorOf(const std::vector<uint8_t> &bytes) {
  try {
    PlanFile::fromBytes(bytes, "plan.llmp");
  } catch (const PlanError &error) {
    return error.what();
  }
  return "";
}

TEST(PlanFile, ValidPlanLoads) {
  PlanFile file = PlanFile::fromBytes(buildPlan(), "plan.llmp");
  EXPECT_EQ(file.plan().model()->num_layers(), 1);
  EXPECT_EQ(file.plan().kernels()->Get(0)->kernel_template()->str(), "rms_norm");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(file.bytes().data()) % 64, 0u);
}

TEST(PlanFile, EveryTruncationIsAnError) {
  std::vector<uint8_t> bytes = buildPlan();
  for (size_t length = 0; length < bytes.size(); ++length) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + long(length));
    EXPECT_NE(errorOf(prefix), "") << "prefix of " << length << " bytes was accepted";
  }
}

TEST(PlanFile, RandomCorruptionNeverCrashes) {
  std::vector<uint8_t> bytes = buildPlan();
  std::mt19937 random(42);
  int rejected = 0;
  for (int trial = 0; trial < 5000; ++trial) {
    std::vector<uint8_t> corrupted = bytes;
    for (int flips = 0; flips < 3; ++flips)
      corrupted[random() % corrupted.size()] ^= uint8_t(1u << (random() % 8));
    rejected += !errorOf(corrupted).empty();  // either outcome is fine; crashing is not
  }
  EXPECT_GT(rejected, 0);
}

TEST(PlanFile, WrongIdentifier) {
  std::vector<uint8_t> bytes = buildPlan();
  bytes[8] = 'X';  // after the size prefix and the root offset
  EXPECT_NE(errorOf(bytes).find("not an llmc plan"), std::string::npos);
}

TEST(PlanFile, TrailingBytesAreAnError) {
  std::vector<uint8_t> bytes = buildPlan();
  bytes.push_back(0);
  EXPECT_NE(errorOf(bytes).find("truncated or has trailing bytes"), std::string::npos);
}

TEST(PlanFile, NewerMajorVersion) {
  PlanShape shape;
  shape.schema_major = kSchemaMajor + 1;
  std::string error = errorOf(buildPlan(shape));
  EXPECT_NE(error.find("schema version " + std::to_string(kSchemaMajor + 1)), std::string::npos) << error;
  EXPECT_NE(error.find("recompile"), std::string::npos) << error;
}

TEST(PlanFile, OutOfRangeIndicesAreRejected) {
  PlanShape badKernel;
  badKernel.launch_kernel = 3;
  EXPECT_NE(errorOf(buildPlan(badKernel)).find("kernel 3 is out of range"), std::string::npos);
  PlanShape badBuffer;
  badBuffer.launch_buffer = -1;
  EXPECT_NE(errorOf(buildPlan(badBuffer)).find("buffer -1 is out of range"), std::string::npos);
  PlanShape badParam;
  badParam.param_index = 7;
  EXPECT_NE(errorOf(buildPlan(badParam)).find("parameter 7 is out of range"), std::string::npos);
}

TEST(PlanFile, LaunchArgumentsMustFitTheKernel) {
  PlanShape wider;
  wider.hidden = 32;  // rms_norm<32> over 16-wide buffers would read past them
  EXPECT_NE(errorOf(buildPlan(wider)).find("does not have the width its template parameters require"),
            std::string::npos)
      << errorOf(buildPlan(wider));
}

TEST(PlanFile, ClusterSizesBeyondTheNonPortableMaximumAreRejected) {
  PlanShape wide;
  wide.max_cluster = 32;
  EXPECT_NE(errorOf(buildPlan(wide)).find("kernel cluster size 32 is outside [1, 16]"), std::string::npos)
      << errorOf(buildPlan(wide));
  wide.max_cluster = 16;
  EXPECT_EQ(errorOf(buildPlan(wide)), "");
}

TEST(PlanFile, LoadNamesMissingEngine) {
  try {
    PlanFile::load("/nonexistent/engine");
    FAIL() << "loaded a missing engine";
  } catch (const PlanError &error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent/engine/plan.llmp"), std::string::npos);
  }
}

TEST(PlanFile, LoadFromDirectory) {
  auto dir = std::filesystem::temp_directory_path() / ("llmc_plan_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::vector<uint8_t> bytes = buildPlan();
  std::ofstream(dir / "plan.llmp", std::ios::binary)
      .write(reinterpret_cast<const char *>(bytes.data()), std::streamsize(bytes.size()));
  EXPECT_EQ(PlanFile::load(dir.string()).plan().max_tokens_per_forward(), 64);
  std::filesystem::remove_all(dir);
}

} // namespace
