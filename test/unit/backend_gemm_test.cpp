// Backend::gemm against an fp64 reference on the same 16-bit values: decode
// row counts (1 to 8) and larger ones, k ending in a partial 32-k block, n
// not a multiple of 16, with and without bias (plans add biases to 16-bit
// outputs only), 16-bit and fp32 outputs, bf16 and f16 inputs. On the CUDA
// backend (LLMC_TEST_BACKEND=cuda, run by test/gpu/check.py) every GEMM also
// runs through each of cuBLASLt's heuristic answers that start-up tuning may
// pick, and through the runtime's GEMV where it takes the GEMM: all must
// meet the reference.

#include "test/unit/BackendUnderTest.h"

#include "runtime/backend/Backend.h"
#include "runtime/plan/PlanFile.h"
#include "runtime/weights/float16.h"

#ifdef LLMC_HAVE_CUDA
#include "runtime/backend/cuda/CudaBackend.h"
#include "runtime/backend/cuda/GemvShape.h"
#endif

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace llmc;
using plan::DType;
using runtime::DeviceBuffer;
using runtime::GemmArgs;

uint16_t to16(DType type, float v) {
  return type == DType::f16 ? weights::floatToHalf(v) : weights::floatToBf16(v);
}
float from16(DType type, uint16_t bits) {
  return type == DType::f16 ? weights::halfToFloat(bits) : weights::bf16ToFloat(bits);
}

struct Shape {
  int64_t rows, n, k;
};

class BackendGemm : public BackendUnderTest {
protected:
  // Runs rows x n x k with random inputs in [-1, 1] through every kernel the
  // backend has for it and checks each output's relative L2 error against
  // fp64 sums of the same 16-bit values.
  void expectNearReference(Shape s, DType input, DType output, bool bias) {
    SCOPED_TRACE(std::to_string(s.rows) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k) +
                 (input == DType::f16 ? " f16" : " bf16") + (output == DType::f32 ? " -> f32" : " -> 16-bit") +
                 (bias ? " + bias" : ""));
    std::mt19937 engine(uint32_t(s.rows * 131 + s.n * 7 + s.k));
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    auto random16 = [&](int64_t count) {
      std::vector<uint16_t> values(static_cast<size_t>(count));
      for (uint16_t &v : values)
        v = to16(input, uniform(engine));
      return values;
    };
    const std::vector<uint16_t> x = random16(s.rows * s.k), w = random16(s.n * s.k), b = random16(s.n);
    std::vector<double> reference(size_t(s.rows * s.n));
    for (int64_t m = 0; m < s.rows; ++m)
      for (int64_t j = 0; j < s.n; ++j) {
        double sum = bias ? from16(input, b[size_t(j)]) : 0.0;
        for (int64_t i = 0; i < s.k; ++i)
          sum += double(from16(input, x[size_t(m * s.k + i)])) * from16(input, w[size_t(j * s.k + i)]);
        reference[size_t(m * s.n + j)] = sum;
      }

    DeviceBuffer dx(*backend_, x.size() * 2), dw(*backend_, w.size() * 2), db(*backend_, b.size() * 2);
    const size_t outBytes = reference.size() * (output == DType::f32 ? 4 : 2);
    DeviceBuffer dout(*backend_, outBytes);
    backend_->upload(dx.get(), x.data(), x.size() * 2);
    backend_->upload(dw.get(), w.data(), w.size() * 2);
    backend_->upload(db.get(), b.data(), b.size() * 2);
    const GemmArgs args{dx.get(), dw.get(), bias ? db.get() : nullptr, dout.get(), s.rows, s.n, s.k, input,
                        output};

    auto check = [&](const char *kernel, const std::function<void()> &run) {
      SCOPED_TRACE(kernel);
      backend_->upload(dout.get(), std::vector<char>(outBytes, 0x7f).data(), outBytes);  // not zeros
      try {
        run();
        backend_->synchronize();
      } catch (const std::exception &error) {
        ADD_FAILURE() << error.what();
        return;
      }
      std::vector<float> out(reference.size());
      if (output == DType::f32) {
        backend_->download(out.data(), dout.get(), outBytes);
      } else {
        std::vector<uint16_t> bits(reference.size());
        backend_->download(bits.data(), dout.get(), outBytes);
        for (size_t i = 0; i < bits.size(); ++i)
          out[i] = from16(output, bits[i]);
      }
      double error = 0, norm = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        error += (out[i] - reference[i]) * (out[i] - reference[i]);
        norm += reference[i] * reference[i];
      }
      // fp32 sums; a 16-bit output adds its rounding (half an ulp: 2^-9 bf16, 2^-12 f16).
      const double tolerance = output == DType::f32 ? 1e-5 : input == DType::bf16 ? 3e-3 : 5e-4;
      EXPECT_LE(std::sqrt(error / norm), tolerance);
    };
    check("default", [&] { backend_->gemm(args); });
#ifdef LLMC_HAVE_CUDA
    if (auto *cuda = dynamic_cast<runtime::CudaBackend *>(backend_.get())) {
      using Kernel = runtime::CudaBackend::GemmKernel;
      for (int answer = 0; answer < runtime::CudaBackend::kCublasLtCandidates; ++answer)
        check(("cuBLASLt answer " + std::to_string(answer)).c_str(),
              [&] { cuda->gemm(args, Kernel::cublasLt, answer); });
      if (cuda->hasGemv() && runtime::CudaBackend::gemvTakes(args))
        check("GEMV", [&] { cuda->gemm(args, Kernel::gemv); });
    }
#endif
  }
};

const Shape kShapes[] = {
    {1, 40, 296},     // k: 9 whole 32-k blocks and a quarter of one
    {3, 1003, 1024},  // n: 62 blocks of 16 and 11 rows
    {8, 64, 4096},    // the GEMV's most rows; each warp loops twice
    {5, 17, 8},       // the smallest k: one vector, 15 of 16 warps idle
    {2, 4096, 2816},
    {3, 9000, 1032},  // 563 tiles: blocks loop over several (132 SMs: 264 blocks)
    {9, 130, 512},    // rows beyond the GEMV
    {64, 256, 1024},
};

TEST_F(BackendGemm, Bf16MatchesReference) {
  for (const Shape &s : kShapes) {
    for (bool bias : {false, true})
      expectNearReference(s, DType::bf16, DType::bf16, bias);
    expectNearReference(s, DType::bf16, DType::f32, false);
  }
}

TEST_F(BackendGemm, F16MatchesReference) {
  for (const Shape &s : kShapes)
    for (DType output : {DType::f16, DType::f32})
      expectNearReference(s, DType::f16, output, output == DType::f16 && s.rows % 2 == 1);
}

#ifdef LLMC_HAVE_CUDA
// Which GEMMs the GEMV takes: decode row counts, whole 16-byte k vectors,
// aligned operands, 16-bit inputs with their own type or fp32 out.
TEST(GemvShape, TakesDecodeGemmsOnly) {
  alignas(16) static char memory[64];
  auto args = [&](int64_t rows, int64_t k, DType in, DType out, int offset) {
    return GemmArgs{memory + offset, memory, nullptr, memory, rows, 4096, k, in, out};
  };
  using runtime::CudaBackend;
  EXPECT_TRUE(CudaBackend::gemvTakes(args(1, 4096, DType::bf16, DType::bf16, 0)));
  EXPECT_TRUE(CudaBackend::gemvTakes(args(8, 8, DType::f16, DType::f32, 16)));
  EXPECT_FALSE(CudaBackend::gemvTakes(args(9, 4096, DType::bf16, DType::bf16, 0)));  // rows
  EXPECT_FALSE(CudaBackend::gemvTakes(args(0, 4096, DType::bf16, DType::bf16, 0)));
  EXPECT_FALSE(CudaBackend::gemvTakes(args(1, 4100, DType::bf16, DType::bf16, 0)));  // k % 8
  EXPECT_FALSE(CudaBackend::gemvTakes(args(1, 4096, DType::bf16, DType::bf16, 8)));  // alignment
  EXPECT_FALSE(CudaBackend::gemvTakes(args(1, 4096, DType::f32, DType::f32, 0)));    // fp32 inputs
  EXPECT_FALSE(CudaBackend::gemvTakes(args(1, 4096, DType::bf16, DType::f16, 0)));   // mixed 16-bit
  EXPECT_EQ(gemv::gridBlocks(1024, 132), 64);     // a tile each
  EXPECT_EQ(gemv::gridBlocks(1003, 132), 63);     // the last tile partial
  EXPECT_EQ(gemv::gridBlocks(4096, 132), 132);    // one a multiprocessor
  EXPECT_EQ(gemv::gridBlocks(128256, 132), 132);
}

// The start-up GEMM choices persist as text keyed by what they were measured
// on: the same key reads them back, another key or a damaged line does not.
TEST(GemmChoices, RoundTripForTheSameKeyOnly) {
  using runtime::CudaBackend;
  using Kernel = CudaBackend::GemmKernel;
  const std::map<CudaBackend::GemmShape, CudaBackend::GemmChoice> choices{
      {{1, 4096, 4096, int(DType::bf16), int(DType::bf16), false}, {Kernel::gemv, 2, 0.432, 0.425, 0.362}},
      {{64, 6144, 4096, int(DType::bf16), int(DType::bf16), true}, {Kernel::cublasLt, 1, 0.555, 0.54, NAN}},
      {{8, 128256, 4096, int(DType::bf16), int(DType::f32), false}, {Kernel::cublasLt, 0, 0.26, 0.26, 0.27}}};
  const std::string text = CudaBackend::formatGemmChoices("H200; cuBLASLt 130000", choices);
  const auto same = CudaBackend::parseGemmChoices("H200; cuBLASLt 130000", text);
  ASSERT_EQ(same.size(), choices.size());
  for (const auto &[shape, choice] : choices) {
    ASSERT_TRUE(same.count(shape));
    const CudaBackend::GemmChoice &read = same.at(shape);
    EXPECT_EQ(read.kernel, choice.kernel);
    EXPECT_EQ(read.algo, choice.algo);
    EXPECT_DOUBLE_EQ(read.heuristicMs, choice.heuristicMs);
    EXPECT_DOUBLE_EQ(read.cublasLtMs, choice.cublasLtMs);
    EXPECT_EQ(std::isnan(read.gemvMs), std::isnan(choice.gemvMs));
  }
  EXPECT_TRUE(CudaBackend::parseGemmChoices("H100; cuBLASLt 130000", text).empty());
  EXPECT_TRUE(CudaBackend::parseGemmChoices("H200; cuBLASLt 130000", "").empty());
  // A line cut short (the last: shapes are written in order) and one with a
  // kernel number out of range are skipped.
  std::string damaged = text;
  damaged.resize(damaged.size() - 12);
  damaged.replace(damaged.find("\n1 4096 4096 ") + 1, 0, "3 1 1 0 0 0 7 0 1 1 1\n");
  const auto kept = CudaBackend::parseGemmChoices("H200; cuBLASLt 130000", damaged);
  EXPECT_EQ(kept.size(), 2u);
  EXPECT_FALSE(kept.count({64, 6144, 4096, int(DType::bf16), int(DType::bf16), true}));
  EXPECT_FALSE(kept.count({3, 1, 1, 0, 0, false}));
}
#endif

} // namespace
