// Unit tests for runtime/weights/safetensors.{h,cpp} and float16.h.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/weights/float16.h"
#include "runtime/weights/safetensors.h"

namespace fs = std::filesystem;
using namespace llmc::weights;

namespace {

// ---------------------------------------------------------------------------
// Helpers

template <typename T>
std::vector<std::byte> toBytes(const std::vector<T>& v) {
  std::vector<std::byte> out(v.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<std::byte> patternBytes(size_t n, unsigned seed) {
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 131 + seed * 7 + 3) & 0xFF);
  return out;
}

std::string readFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void writeFile(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << p;
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A safetensors file from a hand-written header and data section; the length
// field is the header's real length unless overridden.
std::string rawFile(const std::string& header, const std::string& data,
                    std::optional<uint64_t> len_override = std::nullopt) {
  return le64(len_override.value_or(header.size())) + header + data;
}

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::random_device rd;
    dir_ = fs::temp_directory_path() /
           ("llmc_st_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
            std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Expects readHeader(file) to throw SafetensorsError whose message contains
  // `needle` and the file's path.
  void expectHeaderError(const std::string& file_bytes, const std::string& needle,
                         const std::string& name = "bad.safetensors") {
    const std::string p = path(name);
    writeFile(p, file_bytes);
    try {
      readHeader(p);
      ADD_FAILURE() << "no error for case expecting '" << needle << "'";
    } catch (const SafetensorsError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected to contain: " << needle;
      EXPECT_NE(msg.find(p), std::string::npos) << "message does not name the file: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
    }
  }

  fs::path dir_;
};

// ---------------------------------------------------------------------------
// DType

TEST(DTypeTest, NamesSizesAndParsingRoundTrip) {
  struct Row {
    DType d;
    const char* name;
    size_t bytes;
  };
  const Row rows[] = {{DType::F64, "F64", 8},    {DType::F32, "F32", 4},         {DType::F16, "F16", 2},
                      {DType::BF16, "BF16", 2},  {DType::I64, "I64", 8},         {DType::I32, "I32", 4},
                      {DType::I16, "I16", 2},    {DType::I8, "I8", 1},           {DType::U8, "U8", 1},
                      {DType::BOOL, "BOOL", 1},  {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1}};
  for (const auto& r : rows) {
    EXPECT_EQ(dtypeName(r.d), r.name);
    EXPECT_EQ(dtypeBytes(r.d), r.bytes) << r.name;
    ASSERT_TRUE(parseDType(r.name).has_value()) << r.name;
    EXPECT_EQ(*parseDType(r.name), r.d);
  }
  EXPECT_FALSE(parseDType("bf16").has_value());
  EXPECT_FALSE(parseDType("").has_value());
  EXPECT_FALSE(parseDType("F8_E4M3FN").has_value());
  EXPECT_FALSE(parseDType("Q4_0").has_value());
}

// ---------------------------------------------------------------------------
// float16.h

static_assert(floatToBf16(1.0f) == 0x3F80);
static_assert(floatToHalf(1.0f) == 0x3C00);
static_assert(halfToFloat(0x3C00) == 1.0f);
static_assert(bf16ToFloat(0x3F80) == 1.0f);

float bitsToFloat(uint32_t u) { return std::bit_cast<float>(u); }

TEST(Bf16Test, KnownBitPatterns) {
  EXPECT_EQ(floatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(floatToBf16(-2.0f), 0xC000);
  EXPECT_EQ(floatToBf16(0.0f), 0x0000);
  EXPECT_EQ(floatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(floatToBf16(3.140625f), 0x4049);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(floatToBf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(bf16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(bf16ToFloat(0xC000), -2.0f);
  EXPECT_EQ(bf16ToFloat(0x7F7F), 3.3895313892515355e38f);  // largest finite bf16
  EXPECT_EQ(bf16ToFloat(0x0001), bitsToFloat(0x00010000));   // bf16 subnormal
}

TEST(Bf16Test, RoundsToNearestTiesToEven) {
  // Exactly halfway, even lower half: stays.
  EXPECT_EQ(floatToBf16(bitsToFloat(0x3F808000)), 0x3F80);
  // Exactly halfway, odd lower half: rounds up to even.
  EXPECT_EQ(floatToBf16(bitsToFloat(0x3F818000)), 0x3F82);
  // Just above / below halfway.
  EXPECT_EQ(floatToBf16(bitsToFloat(0x3F808001)), 0x3F81);
  EXPECT_EQ(floatToBf16(bitsToFloat(0x3F807FFF)), 0x3F80);
  // Carry into the exponent.
  EXPECT_EQ(floatToBf16(bitsToFloat(0x3FFFFFFF)), 0x4000);
  // Largest float rounds to infinity (as PyTorch does).
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7F80);
  // Negative values round by magnitude.
  EXPECT_EQ(floatToBf16(bitsToFloat(0xBF818000)), 0xBF82);
}

TEST(Bf16Test, NanStaysNan) {
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  // Signalling NaN whose payload lives only in the low 16 bits: naive
  // truncation would give 0x7F80 (infinity).
  const uint16_t b = floatToBf16(bitsToFloat(0x7F800001));
  EXPECT_TRUE(std::isnan(bf16ToFloat(b))) << std::hex << b;
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(bitsToFloat(0xFFFFFFFF)))));
  // A NaN payload near the top of the range must not carry into the sign.
  EXPECT_EQ(floatToBf16(bitsToFloat(0x7FFFFFFF)) & 0x8000, 0);
}

TEST(Bf16Test, ExhaustiveRoundTripOfAllBf16Values) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const float f = bf16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(bf16ToFloat(floatToBf16(f)))) << std::hex << b;
    } else {
      ASSERT_EQ(floatToBf16(f), b) << std::hex << b;
    }
  }
}

TEST(HalfTest, KnownBitPatterns) {
  EXPECT_EQ(floatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(floatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(floatToHalf(0.5f), 0x3800);
  EXPECT_EQ(floatToHalf(0.0f), 0x0000);
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalf(65504.0f), 0x7BFF);  // max half
  EXPECT_EQ(halfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(halfToFloat(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(floatToHalf(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_TRUE(std::isinf(halfToFloat(0x7C00)));
  EXPECT_EQ(halfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(floatToHalf(1.0f / 3.0f), 0x3555);
}

TEST(HalfTest, Subnormals) {
  EXPECT_EQ(halfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(halfToFloat(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(halfToFloat(0x03FF), 1023.0f * std::ldexp(1.0f, -24));  // largest subnormal
  EXPECT_EQ(halfToFloat(0x0200), std::ldexp(1.0f, -15));
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(floatToHalf(1023.0f * std::ldexp(1.0f, -24)), 0x03FF);
  // 2^-25 is halfway between 0 and 2^-24: ties to even -> 0.
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(floatToHalf(-std::ldexp(1.0f, -25)), 0x8000);
  // Slightly more than 2^-25 rounds up.
  EXPECT_EQ(floatToHalf(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  // 3 * 2^-25 is halfway between 1 and 2 units: ties to even -> 2.
  EXPECT_EQ(floatToHalf(3.0f * std::ldexp(1.0f, -25)), 0x0002);
  // 5 * 2^-25 halfway between 2 and 3 units -> 2.
  EXPECT_EQ(floatToHalf(5.0f * std::ldexp(1.0f, -25)), 0x0002);
  // Tiny values flush to signed zero.
  EXPECT_EQ(floatToHalf(1e-30f), 0x0000);
  EXPECT_EQ(floatToHalf(-1e-30f), 0x8000);
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000);
  // Largest subnormal + half a unit rounds up into the normal range.
  EXPECT_EQ(floatToHalf(1023.5f * std::ldexp(1.0f, -24)), 0x0400);
}

TEST(HalfTest, RoundsToNearestTiesToEvenAndOverflows) {
  const float ulp1 = std::ldexp(1.0f, -10);  // half ulp at 1.0
  EXPECT_EQ(floatToHalf(1.0f + ulp1 / 2), 0x3C00);      // tie, even stays
  EXPECT_EQ(floatToHalf(1.0f + 3 * ulp1 / 2), 0x3C02);  // tie, odd rounds up
  EXPECT_EQ(floatToHalf(std::nextafter(1.0f + ulp1 / 2, 2.0f)), 0x3C01);
  EXPECT_EQ(floatToHalf(2047.0f / 1024.0f + ulp1 / 2), 0x4000);  // carry into exponent
  EXPECT_EQ(floatToHalf(65519.0f), 0x7BFF);  // below the tie point
  EXPECT_EQ(floatToHalf(65520.0f), 0x7C00);  // tie between 65504 and "65536": to even = inf
  EXPECT_EQ(floatToHalf(-65520.0f), 0xFC00);
  EXPECT_EQ(floatToHalf(1e6f), 0x7C00);
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::max()), 0x7C00);
}

TEST(HalfTest, NanStaysNan) {
  EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(bitsToFloat(0x7F800001)))));  // payload in low bits only
  EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(bitsToFloat(0xFFC00000)))));
  EXPECT_EQ(floatToHalf(bitsToFloat(0xFFC00000)) & 0x8000, 0x8000);  // sign kept
  EXPECT_TRUE(std::isnan(halfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(halfToFloat(0x7C01)));
}

TEST(HalfTest, ExhaustiveRoundTripOfAllHalfValues) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = halfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(halfToFloat(floatToHalf(f)))) << std::hex << h;
    } else {
      ASSERT_EQ(floatToHalf(f), h) << std::hex << h;
    }
  }
}

#ifdef __FLT16_MAX__
// The compiler's own float -> _Float16 conversion is correctly rounded; use
// it as an oracle over random bit patterns and over every rounding boundary.
TEST(HalfTest, MatchesCompilerFloat16Conversion) {
  auto check = [](uint32_t bits) {
    const float f = std::bit_cast<float>(bits);
    const auto ref = std::bit_cast<uint16_t>(static_cast<_Float16>(f));
    const uint16_t got = floatToHalf(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(halfToFloat(got))) << std::hex << bits;
    } else {
      ASSERT_EQ(got, ref) << "float bits 0x" << std::hex << bits;
    }
    const float widened = static_cast<float>(std::bit_cast<_Float16>(ref));
    if (std::isnan(widened)) {
      ASSERT_TRUE(std::isnan(halfToFloat(ref))) << std::hex << ref;
    } else {
      ASSERT_EQ(halfToFloat(ref), widened) << std::hex << ref;
    }
  };
  std::mt19937 rng(12345);
  for (int i = 0; i < 1'000'000; ++i) check(static_cast<uint32_t>(rng()));
  // Midpoints between consecutive halves and their neighbours.
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const double lo = halfToFloat(static_cast<uint16_t>(h));
    const double hi = h + 1 == 0x7C00 ? 65536.0 : halfToFloat(static_cast<uint16_t>(h + 1));
    const uint32_t mid = std::bit_cast<uint32_t>(static_cast<float>((lo + hi) / 2));
    for (uint32_t b : {mid - 1, mid, mid + 1}) {
      check(b);
      check(b | 0x80000000u);
    }
  }
}
#endif

// ---------------------------------------------------------------------------
// Writer + Checkpoint round trip

TEST_F(TempDirTest, RoundTripWriterToCheckpoint) {
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 0.0f, -0.0f, 1e30f};
  std::vector<uint16_t> bf16;
  for (float v : {1.0f, -2.0f, 0.5f, 3.140625f}) bf16.push_back(floatToBf16(v));
  const std::vector<int64_t> i64 = {-1234567890123LL};
  const auto big = patternBytes(3 * 1000 * 2, 1);

  SafetensorsWriter w;
  w.setMetadata({{"format", "pt"}});
  w.add("z.weight", DType::F32, {2, 3}, toBytes(f32));
  w.add("a.bf16", DType::BF16, {4}, toBytes(bf16));
  w.add("m.scalar", DType::I64, {}, toBytes(i64));
  w.add("empty", DType::U8, {0, 5}, {});
  w.add("big", DType::F16, {3, 1000}, big);
  const std::string file = path("model.safetensors");
  w.write(file);
  EXPECT_FALSE(fs::exists(file + ".tmp"));

  // Layout: 8-byte length, header padded to a multiple of 8 with spaces,
  // offsets contiguous in insertion order.
  const std::string raw = readFile(file);
  ASSERT_GE(raw.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(raw[i]);
  EXPECT_EQ(n % 8, 0u);
  const std::string header_text = raw.substr(8, n);
  const auto header = nlohmann::json::parse(header_text);
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["z.weight"]["data_offsets"][0], 0);
  EXPECT_EQ(header["z.weight"]["data_offsets"][1], 24);
  EXPECT_EQ(header["a.bf16"]["data_offsets"][0], 24);
  EXPECT_EQ(header["a.bf16"]["data_offsets"][1], 32);
  EXPECT_EQ(header["m.scalar"]["data_offsets"][0], 32);
  EXPECT_EQ(header["m.scalar"]["shape"].size(), 0u);
  EXPECT_EQ(header["empty"]["data_offsets"][0], 40);
  EXPECT_EQ(header["empty"]["data_offsets"][1], 40);
  EXPECT_EQ(header["big"]["dtype"], "F16");
  EXPECT_EQ(raw.size(), 8 + n + 24 + 8 + 8 + 0 + big.size());

  auto ck = Checkpoint::open(dir_.string());
  ASSERT_EQ(ck.tensors().size(), 5u);
  std::vector<std::string> names;
  for (const auto& t : ck.tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a.bf16", "big", "empty", "m.scalar", "z.weight"}));
  EXPECT_EQ(ck.find("nope"), nullptr);
  EXPECT_EQ(ck.find("z.weigh"), nullptr);

  const TensorInfo* z = ck.find("z.weight");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->dtype, DType::F32);
  EXPECT_EQ(z->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(z->numElements(), 6);
  EXPECT_EQ(z->file, file);
  auto zb = ck.data(*z);
  ASSERT_EQ(zb.size(), f32.size() * 4);
  std::vector<float> back(f32.size());
  std::memcpy(back.data(), zb.data(), zb.size());
  for (size_t i = 0; i < f32.size(); ++i)
    EXPECT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(f32[i])) << i;

  const TensorInfo* a = ck.find("a.bf16");
  ASSERT_NE(a, nullptr);
  auto ab = ck.data(*a);
  ASSERT_EQ(ab.size(), 8u);
  std::vector<uint16_t> bback(4);
  std::memcpy(bback.data(), ab.data(), 8);
  EXPECT_EQ(bback, bf16);
  EXPECT_EQ(bf16ToFloat(bback[3]), 3.140625f);

  const TensorInfo* s = ck.find("m.scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->numElements(), 1);
  int64_t sv = 0;
  std::memcpy(&sv, ck.data(*s).data(), 8);
  EXPECT_EQ(sv, i64[0]);

  const TensorInfo* e = ck.find("empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(ck.data(*e).size(), 0u);
  EXPECT_EQ(e->numElements(), 0);

  const TensorInfo* b = ck.find("big");
  ASSERT_NE(b, nullptr);
  auto bb = ck.data(*b);
  ASSERT_EQ(bb.size(), big.size());
  EXPECT_EQ(std::memcmp(bb.data(), big.data(), big.size()), 0);

  // Mapping is stable: repeated calls give the same pointer.
  EXPECT_EQ(ck.data(*b).data(), bb.data());

  // Move keeps mappings alive and valid.
  Checkpoint moved = std::move(ck);
  EXPECT_EQ(moved.data(*moved.find("big")).data(), bb.data());
  EXPECT_EQ(std::memcmp(bb.data(), big.data(), big.size()), 0);
  Checkpoint assigned = Checkpoint::open(dir_.string());
  assigned = std::move(moved);
  EXPECT_EQ(assigned.data(*assigned.find("big")).data(), bb.data());

  // readHeader agrees and reports the data start.
  uint64_t data_start = 0;
  auto infos = readHeader(file, data_start);
  EXPECT_EQ(infos.size(), 5u);
  EXPECT_EQ(data_start, 8 + n);
  EXPECT_EQ(infos.front().name, "z.weight");  // sorted by offset
}

TEST_F(TempDirTest, WriterWithoutMetadataAndOverwrite) {
  SafetensorsWriter w;
  w.add("x", DType::I32, {2}, toBytes(std::vector<int32_t>{7, -7}));
  const std::string file = path("model.safetensors");
  writeFile(file, "old contents that are not safetensors");
  w.write(file);
  const std::string raw = readFile(file);
  EXPECT_EQ(raw.find("__metadata__"), std::string::npos);
  auto ck = Checkpoint::open(dir_.string());
  ASSERT_EQ(ck.tensors().size(), 1u);
  int32_t v[2];
  std::memcpy(v, ck.data(ck.tensors()[0]).data(), 8);
  EXPECT_EQ(v[0], 7);
  EXPECT_EQ(v[1], -7);
}

TEST_F(TempDirTest, WriterRejectsBadInput) {
  SafetensorsWriter w;
  EXPECT_THROW(w.add("a", DType::F32, {2, 2}, patternBytes(15, 0)), SafetensorsError);
  EXPECT_THROW(w.add("a", DType::F32, {-1}, {}), SafetensorsError);
  EXPECT_THROW(w.add("", DType::U8, {1}, patternBytes(1, 0)), SafetensorsError);
  EXPECT_THROW(w.add("__metadata__", DType::U8, {1}, patternBytes(1, 0)), SafetensorsError);
  w.add("a", DType::U8, {1}, patternBytes(1, 0));
  EXPECT_THROW(w.add("a", DType::U8, {1}, patternBytes(1, 0)), SafetensorsError);
  try {
    w.add("b", DType::BF16, {3}, patternBytes(5, 0));
    ADD_FAILURE();
  } catch (const SafetensorsError& e) {
    EXPECT_NE(std::string(e.what()).find("needs 6"), std::string::npos) << e.what();
  }
  // Writing into a missing directory fails cleanly.
  EXPECT_THROW(w.write(path("no/such/dir/model.safetensors")), SafetensorsError);
}

TEST_F(TempDirTest, DataFromAnotherCheckpointIsRejected) {
  SafetensorsWriter w;
  w.add("x", DType::U8, {4}, patternBytes(4, 2));
  w.write(path("model.safetensors"));
  auto ck = Checkpoint::open(dir_.string());
  TensorInfo foreign = ck.tensors()[0];
  foreign.file = path("other.safetensors");
  EXPECT_THROW(ck.data(foreign), SafetensorsError);
  TensorInfo past = ck.tensors()[0];
  past.end = 1000;
  EXPECT_THROW(ck.data(past), SafetensorsError);
  // A copy with the same file/offsets is fine.
  TensorInfo copy = ck.tensors()[0];
  EXPECT_EQ(ck.data(copy).size(), 4u);
}

// ---------------------------------------------------------------------------
// Sharded checkpoints

void writeShard(const std::string& p, const std::vector<std::pair<std::string, std::vector<std::byte>>>& ts) {
  SafetensorsWriter w;
  w.setMetadata({{"format", "pt"}});
  for (const auto& [name, bytes] : ts) w.add(name, DType::BF16, {static_cast<int64_t>(bytes.size() / 2)}, bytes);
  w.write(p);
}

void writeIndex(const std::string& p, const nlohmann::json& weight_map) {
  nlohmann::json idx = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  writeFile(p, idx.dump(2));
}

TEST_F(TempDirTest, ShardedIndexWithTwoShards) {
  const auto a = patternBytes(16, 1), b = patternBytes(32, 2), c = patternBytes(8, 3), d = patternBytes(2, 4);
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  writeShard(path(s1), {{"model.embed_tokens.weight", a}, {"model.layers.0.mlp.up_proj.weight", b}});
  writeShard(path(s2), {{"model.norm.weight", c}, {"lm_head.weight", d}});
  writeIndex(path("model.safetensors.index.json"), {{"model.embed_tokens.weight", s1},
                                                    {"model.layers.0.mlp.up_proj.weight", s1},
                                                    {"model.norm.weight", s2},
                                                    {"lm_head.weight", s2}});
  // A stray single-file checkpoint must be ignored when an index exists.
  writeFile(path("model.safetensors"), "garbage");

  auto ck = Checkpoint::open(dir_.string());
  ASSERT_EQ(ck.tensors().size(), 4u);
  EXPECT_EQ(ck.tensors()[0].name, "lm_head.weight");
  EXPECT_EQ(ck.tensors()[3].name, "model.norm.weight");
  EXPECT_EQ(ck.files(), (std::vector<std::string>{path(s1), path(s2)}));
  const std::pair<const char*, const std::vector<std::byte>*> want[] = {
      {"model.embed_tokens.weight", &a}, {"model.layers.0.mlp.up_proj.weight", &b},
      {"model.norm.weight", &c},         {"lm_head.weight", &d}};
  for (const auto& [name, bytes] : want) {
    const TensorInfo* t = ck.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->file, (*bytes == a || *bytes == b) ? path(s1) : path(s2)) << name;
    auto span = ck.data(*t);
    ASSERT_EQ(span.size(), bytes->size()) << name;
    EXPECT_EQ(std::memcmp(span.data(), bytes->data(), span.size()), 0) << name;
    EXPECT_EQ(t->shape, (std::vector<int64_t>{static_cast<int64_t>(bytes->size() / 2)}));
  }
}

TEST_F(TempDirTest, ShardedIndexErrors) {
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  writeShard(path(s1), {{"a", patternBytes(4, 1)}});
  writeShard(path(s2), {{"b", patternBytes(4, 2)}});
  const std::string idx = path("model.safetensors.index.json");

  auto expectOpenError = [&](const std::string& needle, const std::vector<std::string>& also = {}) {
    try {
      Checkpoint::open(dir_.string());
      ADD_FAILURE() << "no error, expected '" << needle << "'";
    } catch (const SafetensorsError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
      for (const auto& s : also) EXPECT_NE(msg.find(s), std::string::npos) << msg << " lacks " << s;
    }
  };

  // Tensor mapped to the wrong shard: the message names tensor and shard.
  writeIndex(idx, {{"a", s1}, {"b", s1}});
  expectOpenError("does not contain", {"'b'", s1});

  // Listed shard missing.
  writeIndex(idx, {{"a", s1}, {"b", "model-00003-of-00002.safetensors"}});
  expectOpenError("does not exist", {"model-00003-of-00002.safetensors"});

  // Shard outside the directory.
  writeIndex(idx, {{"a", s1}, {"b", "../" + s2}});
  expectOpenError("not a relative path");

  // Index problems.
  writeFile(idx, "{\"weight_map\": ");
  expectOpenError("not valid JSON", {idx});
  writeFile(idx, "[]");
  expectOpenError("not a JSON object");
  writeFile(idx, "{\"metadata\": {}}");
  expectOpenError("missing \"weight_map\"");
  writeFile(idx, "{\"weight_map\": {\"a\": 3}}");
  expectOpenError("is not a string");

  // A broken shard is reported through its own header error.
  writeIndex(idx, {{"a", s1}, {"b", s2}});
  writeFile(path(s2), "short");
  expectOpenError("too short", {path(s2)});
}

TEST_F(TempDirTest, MissingCheckpointFiles) {
  try {
    Checkpoint::open(dir_.string());
    ADD_FAILURE();
  } catch (const SafetensorsError& e) {
    EXPECT_EQ(std::string(e.what()), "no model.safetensors or model.safetensors.index.json in " + dir_.string());
  }
  EXPECT_THROW(Checkpoint::open(path("does-not-exist")), SafetensorsError);
  EXPECT_THROW(readHeader(path("nope.safetensors")), SafetensorsError);
  fs::create_directory(path("model.safetensors"));  // a directory, not a file
  EXPECT_THROW(Checkpoint::open(dir_.string()), SafetensorsError);
}

// ---------------------------------------------------------------------------
// Malformed single files

TEST_F(TempDirTest, FileShorterThanEightBytes) {
  expectHeaderError("", "too short");
  expectHeaderError("\x08", "too short");
  expectHeaderError(std::string("\x02\0\0\0\0\0\0", 7), "too short");
}

TEST_F(TempDirTest, HeaderLengthTooLarge) {
  expectHeaderError(rawFile("{}", "", 1000), "larger than the file");
  expectHeaderError(rawFile("{}", "", 3), "larger than the file");
  expectHeaderError(rawFile("{}", "", 200'000'000), "exceeds the limit");
  expectHeaderError(rawFile("{}", "", UINT64_MAX), "exceeds the limit");
  expectHeaderError(rawFile("{}", "", 100'000'001), "exceeds the limit");
  expectHeaderError(rawFile("", ""), "empty");
}

TEST_F(TempDirTest, HeaderNotJsonOrNotObject) {
  expectHeaderError(rawFile("{\"a\": ", ""), "not valid JSON");
  expectHeaderError(rawFile("not json at all", ""), "not valid JSON");
  expectHeaderError(rawFile(std::string("{}\0\0", 4), ""), "NUL byte");
  expectHeaderError(rawFile(std::string("{\0}", 3), ""), "NUL byte");
  expectHeaderError(rawFile("[1, 2]", ""), "not a JSON object");
  expectHeaderError(rawFile("\"str\"", ""), "not a JSON object");
  expectHeaderError(rawFile("{\"a\": 5}", ""), "entry is not an object");
}

TEST_F(TempDirTest, MissingFields) {
  expectHeaderError(rawFile(R"({"t": {"shape": [1], "data_offsets": [0, 4]}})", "xxxx"), "missing \"dtype\"");
  expectHeaderError(rawFile(R"({"t": {"dtype": "F32", "data_offsets": [0, 4]}})", "xxxx"), "missing \"shape\"");
  expectHeaderError(rawFile(R"({"t": {"dtype": "F32", "shape": [1]}})", "xxxx"), "missing \"data_offsets\"");
  expectHeaderError(rawFile(R"({"t": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}})", "xxxx"),
                    "\"dtype\" is not a string");
  expectHeaderError(rawFile(R"({"t": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})", "xxxx"),
                    "\"shape\" is not an array");
  expectHeaderError(rawFile(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "xxxx"),
                    "\"data_offsets\" is not an array of two");
  expectHeaderError(rawFile(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": "0,4"}})", "xxxx"),
                    "\"data_offsets\" is not an array of two");
}

TEST_F(TempDirTest, UnknownDtype) {
  expectHeaderError(rawFile(R"({"t": {"dtype": "Q4_K", "shape": [1], "data_offsets": [0, 4]}})", "xxxx"),
                    "unknown dtype 'Q4_K'");
  expectHeaderError(rawFile(R"({"t": {"dtype": "bf16", "shape": [2], "data_offsets": [0, 4]}})", "xxxx"),
                    "unknown dtype 'bf16'");
}

TEST_F(TempDirTest, BadDimensions) {
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": [-1, 4], "data_offsets": [0, 4]}})", "xxxx"),
                    "negative dimension -1");
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": [2.5], "data_offsets": [0, 4]}})", "xxxx"),
                    "non-integer dimension");
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": ["4"], "data_offsets": [0, 4]}})", "xxxx"),
                    "non-integer dimension");
  expectHeaderError(
      rawFile(R"({"t": {"dtype": "F32", "shape": [4611686018427387904, 4611686018427387904], "data_offsets": [0, 4]}})",
              "xxxx"),
      "too large");
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 4]}})",
                            "xxxx"),
                    "too large");
}

TEST_F(TempDirTest, BadOffsets) {
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": [4], "data_offsets": [8, 4]}})", std::string(8, 'x')),
                    "out of order");
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})", "xxxx"),
                    "past the end of the file");
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": [4], "data_offsets": [-4, 0]}})", "xxxx"),
                    "non-negative integers");
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": [4], "data_offsets": [0.0, 4]}})", "xxxx"),
                    "non-negative integers");
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 18446744073709551615]}})",
                            "xxxx"),
                    "past the end of the file");
}

TEST_F(TempDirTest, ByteSizeMismatch) {
  expectHeaderError(rawFile(R"({"t": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 6]}})", "xxxxxx"),
                    "byte size 6 does not match shape [2, 3] x BF16 (expected 12 bytes)");
  expectHeaderError(rawFile(R"({"t": {"dtype": "F32", "shape": [], "data_offsets": [0, 8]}})", "xxxxxxxx"),
                    "does not match shape");
}

TEST_F(TempDirTest, OverlappingTensorsRejected) {
  const std::string data(8, 'x');
  expectHeaderError(rawFile(R"({"a": {"dtype": "U8", "shape": [6], "data_offsets": [0, 6]},
                                "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})",
                            data),
                    "overlap");
  // Identical ranges.
  expectHeaderError(rawFile(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                "b": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]}})",
                            data),
                    "overlap");
  // Contained within a larger one (detected even with a tensor in between).
  expectHeaderError(rawFile(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                                "b": {"dtype": "U8", "shape": [1], "data_offsets": [2, 3]},
                                "c": {"dtype": "U8", "shape": [1], "data_offsets": [6, 7]}})",
                            data),
                    "overlap");
}

TEST_F(TempDirTest, AcceptedEdgeCases) {
  // Adjacent tensors, an empty tensor sharing an offset, a gap, trailing
  // bytes, extra unknown keys and header padding are all fine.
  const std::string p = path("ok.safetensors");
  writeFile(p, rawFile(R"({"__metadata__": {"format": "pt"},
      "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
      "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [4, 4]},
      "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6], "extra": true},
      "c": {"dtype": "BOOL", "shape": [1], "data_offsets": [8, 9]}}        )",
                       std::string(12, 'x')));
  auto infos = readHeader(p);
  ASSERT_EQ(infos.size(), 4u);
  EXPECT_EQ(infos[0].name, "a");
  EXPECT_EQ(infos.back().name, "c");
  // An empty header object is a valid (empty) file.
  writeFile(p, rawFile("{}", ""));
  EXPECT_TRUE(readHeader(p).empty());
}

TEST_F(TempDirTest, MetadataMustBeStringMap) {
  const std::string t = R"("t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]})";
  expectHeaderError(rawFile("{\"__metadata__\": {\"format\": 1}, " + t + "}", "x"), "\"__metadata__\" value");
  expectHeaderError(rawFile("{\"__metadata__\": \"pt\", " + t + "}", "x"), "\"__metadata__\" is not an object");
  expectHeaderError(rawFile("{\"__metadata__\": {\"a\": {\"b\": \"c\"}}, " + t + "}", "x"), "\"__metadata__\"");
  // Not reported as a tensor when valid.
  const std::string p = path("ok.safetensors");
  writeFile(p, rawFile("{\"__metadata__\": {\"format\": \"pt\"}, " + t + "}", "x"));
  auto infos = readHeader(p);
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].name, "t");
}

TEST_F(TempDirTest, DuplicateTensorNameRejected) {
  expectHeaderError(rawFile(R"({"t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                                "t": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
                            "xx"),
                    "duplicate entry 't'");
}

TEST_F(TempDirTest, TruncatedFile) {
  SafetensorsWriter w;
  w.add("w", DType::F32, {4, 4}, patternBytes(64, 5));
  const std::string good = path("good.safetensors");
  w.write(good);
  const std::string raw = readFile(good);
  // Truncated inside the data section.
  expectHeaderError(raw.substr(0, raw.size() - 1), "past the end of the file");
  // Truncated inside the header.
  expectHeaderError(raw.substr(0, 20), "larger than the file");
  // Through Checkpoint::open too.
  writeFile(path("model.safetensors"), raw.substr(0, raw.size() - 10));
  try {
    Checkpoint::open(dir_.string());
    ADD_FAILURE();
  } catch (const SafetensorsError& e) {
    EXPECT_NE(std::string(e.what()).find("past the end"), std::string::npos) << e.what();
  }
}

// Every prefix and many random corruptions of a valid file either parse or
// throw SafetensorsError; nothing else (and, under ASan/UBSan, no UB).
TEST_F(TempDirTest, CorruptionNeverEscapesAsAnythingElse) {
  SafetensorsWriter w;
  w.setMetadata({{"format", "pt"}});
  w.add("model.embed_tokens.weight", DType::BF16, {4, 2}, patternBytes(16, 1));
  w.add("model.norm.weight", DType::F32, {2}, patternBytes(8, 2));
  const std::string good = path("good.safetensors");
  w.write(good);
  const std::string raw = readFile(good);
  const std::string p = path("fuzz.safetensors");
  auto attempt = [&](const std::string& bytes) {
    writeFile(p, bytes);
    try {
      auto infos = readHeader(p);
      for (const auto& t : infos) {
        ASSERT_LE(t.begin, t.end);
        ASSERT_EQ(t.end - t.begin, static_cast<uint64_t>(t.numElements()) * dtypeBytes(t.dtype));
      }
    } catch (const SafetensorsError&) {
    }
  };
  for (size_t n = 0; n <= raw.size(); ++n) attempt(raw.substr(0, n));
  std::mt19937 rng(7);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(raw[i]);
  const size_t header_end = 8 + header_len;  // corrupt only the length field and the JSON
  for (int i = 0; i < 2000; ++i) {
    std::string bytes = raw;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      const size_t pos = rng() % header_end;
      static const char kChars[] = "0123456789-[]{}\",:. eE\x00\xff";
      bytes[pos] = kChars[rng() % (sizeof kChars - 1)];
    }
    attempt(bytes);
  }
}

}  // namespace
