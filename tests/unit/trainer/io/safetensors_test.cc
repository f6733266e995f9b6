#include "worker/trainer/io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/weights/safetensors_torch.h"

namespace qlorad::trainer {
namespace {

using ::testing::HasSubstr;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

// A file with a hand-written header, to feed the reader what a broken writer might produce.
std::string RawFile(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i, n >>= 8) out[i] = static_cast<char>(n & 0xff);
  return out + header + std::string(data_bytes, '\x01');
}

TEST(SafetensorsTest, RoundTripKeepsNamesShapesDtypesAndBytes) {
  TempDir dir;
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1e-3f};
  const std::vector<int64_t> b = {1, -2, 1LL << 40};
  const std::vector<uint8_t> c = {9};  // 1 byte: the next tensor would be unaligned without padding
  const std::string path = dir / "t.safetensors";
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"w.a", "F32", {2, 3}, a.data()},
                                {"b", "I64", {3}, b.data()},
                                {"c", "U8", {1}, c.data()}},
                               {{"format", "pt"}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->metadata().at("format"), "pt");
  ASSERT_EQ(file->tensors().size(), 3u);
  const auto* info = file->Find("w.a");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->dtype, "F32");
  EXPECT_EQ(info->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(file->Data(*info), a.data(), a.size() * 4), 0);
  const auto* bi = file->Find("b");
  ASSERT_NE(bi, nullptr);
  EXPECT_EQ(std::memcmp(file->Data(*bi), b.data(), b.size() * 8), 0);
  EXPECT_EQ(file->Find("missing"), nullptr);
  // Header padded to 8 bytes so the data section starts aligned.
  const std::string bytes = ReadFile(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(header_len % 8, 0u);
}

TEST(SafetensorsTest, TorchBridgeRoundTripsBf16Exactly) {
  TempDir dir;
  at::Tensor t = at::randn({4, 5}).to(at::kBFloat16);
  const std::string path = dir / "t.safetensors";
  ASSERT_TRUE(SaveTensors(path, {{"x", t}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto back = ReadTensor(*file, *file->Find("x"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(*back, t));
}

TEST(SafetensorsTest, TruncatedFileNamesFileAndTensor) {
  TempDir dir;
  const std::vector<float> a(16, 1.0f);
  const std::string path = dir / "t.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"layer.weight", "F32", {4, 4}, a.data()}}).ok());
  std::string bytes = ReadFile(path);
  WriteFile(path, bytes.substr(0, bytes.size() - 10));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
  EXPECT_THAT(file.status().message(), HasSubstr("layer.weight"));
  EXPECT_THAT(file.status().message(), HasSubstr("truncated"));
}

TEST(SafetensorsTest, TruncatedHeaderIsDataLoss) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  WriteFile(path,
            RawFile(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4).substr(0, 20));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(file.status().message(), HasSubstr("runs past the end"));
  WriteFile(path, "abc");
  EXPECT_THAT(SafetensorsFile::Open(path).status().message(), HasSubstr("too short"));
}

TEST(SafetensorsTest, HeaderThatLiesAboutOffsetsIsRejected) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  // Gap between tensors.
  WriteFile(path, RawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                          12));
  auto gap = SafetensorsFile::Open(path);
  ASSERT_FALSE(gap.ok());
  EXPECT_THAT(gap.status().message(), HasSubstr("tensor 'b'"));
  EXPECT_THAT(gap.status().message(), HasSubstr("contiguous"));
  // Offsets past the data section.
  WriteFile(path, RawFile(R"({"a":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}})", 16));
  auto past = SafetensorsFile::Open(path);
  ASSERT_FALSE(past.ok());
  EXPECT_THAT(past.status().message(), HasSubstr("tensor 'a'"));
  // Byte count that does not match dtype x shape.
  WriteFile(path, RawFile(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}})", 8));
  auto size = SafetensorsFile::Open(path);
  ASSERT_FALSE(size.ok());
  EXPECT_THAT(size.status().message(), HasSubstr("need 16"));
  // Overlapping tensors.
  WriteFile(path, RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                          12));
  EXPECT_FALSE(SafetensorsFile::Open(path).ok());
  // A header length beyond the limit, before any allocation.
  std::string huge(8, '\0');
  huge[6] = 0x7f;
  WriteFile(path, huge + "{}");
  EXPECT_THAT(SafetensorsFile::Open(path).status().message(), HasSubstr("exceeds the limit"));
}

TEST(SafetensorsTest, UnknownDtypeNamesTensor) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  WriteFile(path, RawFile(R"({"emb":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", 4));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(file.status().message(), HasSubstr("tensor 'emb'"));
  EXPECT_THAT(file.status().message(), HasSubstr("unknown dtype 'F12'"));
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open("/nonexistent/x.safetensors");
  EXPECT_EQ(file.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr("/nonexistent/x.safetensors"));
}

}  // namespace
}  // namespace qlorad::trainer
