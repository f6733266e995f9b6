#include "worker/trainer/io/gguf_writer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace qlorad::trainer {
namespace {

namespace fs = std::filesystem;

// A reader written from the GGUF spec for these tests only: it parses what the writer wrote and
// fails the test on anything it does not expect.
class Reader {
 public:
  explicit Reader(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    bytes_ = ss.str();
  }
  template <typename T>
  T Get() {
    T v;
    EXPECT_LE(pos_ + sizeof(T), bytes_.size());
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string String() {
    const auto n = Get<uint64_t>();
    std::string s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  size_t pos() const { return pos_; }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
  size_t pos_ = 0;
};

struct ReadTensor {
  std::vector<uint64_t> ne;
  uint32_t type;
  uint64_t offset;
};

class GgufWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() /
        ("gguf_writer_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir_, ec)) fs::remove(entry.path(), ec);
    fs::remove(dir_, ec);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(GgufWriterTest, HeaderMetadataAndTensorInfosReadBack) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.block_count", 2);
  w.AddFloat32("llama.rope.freq_base", 500000.0f);
  w.AddBool("tokenizer.ggml.add_bos_token", true);
  w.AddInt32("x.int", -7);
  w.AddUint64("x.u64", 1ull << 40);
  w.AddStringArray("tokenizer.ggml.tokens", {"a", "", "\xc4\xa0hello"});
  w.AddInt32Array("tokenizer.ggml.token_type", {1, 3, 5});
  w.AddFloat32Array("x.floats", {0.5f, -1.0f});
  // [3, 5] fp32 (60 bytes, padded to 64), then [2, 64] q8_0 (2 rows of 2 blocks: 136 bytes).
  ASSERT_TRUE(w.AddTensor("a.weight", {3, 5}, GgmlType::kF32).ok());
  ASSERT_TRUE(w.AddTensor("b.weight", {2, 64}, GgmlType::kQ8_0).ok());
  ASSERT_TRUE(w.Open(Path("m.gguf")).ok());
  std::vector<float> a(15);
  for (int i = 0; i < 15; ++i) a[i] = static_cast<float>(i);
  ASSERT_TRUE(w.WriteTensorData("a.weight", a.data(), 60).ok());
  std::vector<uint8_t> b(136, 0xab);
  ASSERT_TRUE(w.WriteTensorData("b.weight", b.data(), 136).ok());
  ASSERT_TRUE(w.Close().ok());

  Reader r(Path("m.gguf"));
  EXPECT_EQ(r.bytes().substr(0, 4), "GGUF");
  r.Get<uint32_t>();
  EXPECT_EQ(r.Get<uint32_t>(), 3u);         // version
  EXPECT_EQ(r.Get<uint64_t>(), 2u);         // tensors
  EXPECT_EQ(r.Get<uint64_t>(), 10u);        // keys: the 9 above and general.alignment
  std::map<std::string, std::string> seen;  // key -> value rendered as text
  for (int k = 0; k < 10; ++k) {
    const std::string key = r.String();
    const auto type = static_cast<GgufValueType>(r.Get<uint32_t>());
    std::string value;
    switch (type) {
      case GgufValueType::kUint32:
        value = "u32:" + std::to_string(r.Get<uint32_t>());
        break;
      case GgufValueType::kInt32:
        value = "i32:" + std::to_string(r.Get<int32_t>());
        break;
      case GgufValueType::kUint64:
        value = "u64:" + std::to_string(r.Get<uint64_t>());
        break;
      case GgufValueType::kFloat32:
        value = "f32:" + std::to_string(r.Get<float>());
        break;
      case GgufValueType::kBool:
        value = "bool:" + std::to_string(r.Get<uint8_t>());
        break;
      case GgufValueType::kString:
        value = "str:" + r.String();
        break;
      case GgufValueType::kArray: {
        const auto elem = static_cast<GgufValueType>(r.Get<uint32_t>());
        const auto n = r.Get<uint64_t>();
        value = "arr" + std::to_string(static_cast<uint32_t>(elem)) + ":";
        for (uint64_t i = 0; i < n; ++i) {
          if (elem == GgufValueType::kString) value += "[" + r.String() + "]";
          if (elem == GgufValueType::kInt32) value += std::to_string(r.Get<int32_t>()) + ",";
          if (elem == GgufValueType::kFloat32) value += std::to_string(r.Get<float>()) + ",";
        }
        break;
      }
      default:
        FAIL() << "unexpected type for " << key;
    }
    seen[key] = value;
  }
  EXPECT_EQ(seen["general.alignment"], "u32:32");
  EXPECT_EQ(seen["general.architecture"], "str:llama");
  EXPECT_EQ(seen["llama.block_count"], "u32:2");
  EXPECT_EQ(seen["llama.rope.freq_base"], "f32:" + std::to_string(500000.0f));
  EXPECT_EQ(seen["tokenizer.ggml.add_bos_token"], "bool:1");
  EXPECT_EQ(seen["x.int"], "i32:-7");
  EXPECT_EQ(seen["x.u64"], "u64:1099511627776");
  EXPECT_EQ(seen["tokenizer.ggml.tokens"], "arr8:[a][][\xc4\xa0hello]");
  EXPECT_EQ(seen["tokenizer.ggml.token_type"], "arr5:1,3,5,");
  EXPECT_EQ(seen["x.floats"], "arr6:" + std::to_string(0.5f) + "," + std::to_string(-1.0f) + ",");

  std::map<std::string, ReadTensor> tensors;
  for (int t = 0; t < 2; ++t) {
    const std::string name = r.String();
    ReadTensor info;
    const auto n_dims = r.Get<uint32_t>();
    for (uint32_t d = 0; d < n_dims; ++d) info.ne.push_back(r.Get<uint64_t>());
    info.type = r.Get<uint32_t>();
    info.offset = r.Get<uint64_t>();
    tensors[name] = info;
  }
  // ggml order: ne[0] is the contiguous (last PyTorch) dimension.
  EXPECT_EQ(tensors["a.weight"].ne, (std::vector<uint64_t>{5, 3}));
  EXPECT_EQ(tensors["a.weight"].type, 0u);
  EXPECT_EQ(tensors["a.weight"].offset, 0u);
  EXPECT_EQ(tensors["b.weight"].ne, (std::vector<uint64_t>{64, 2}));
  EXPECT_EQ(tensors["b.weight"].type, 8u);
  EXPECT_EQ(tensors["b.weight"].offset, 64u);  // 60 bytes rounded up to the alignment

  // The data section starts at the first aligned offset after the infos, padded with zeros.
  const size_t data_start = (r.pos() + 31) / 32 * 32;
  for (size_t i = r.pos(); i < data_start; ++i) EXPECT_EQ(r.bytes()[i], '\0');
  float a_back[15];
  std::memcpy(a_back, r.bytes().data() + data_start, sizeof(a_back));
  for (int i = 0; i < 15; ++i) EXPECT_EQ(a_back[i], static_cast<float>(i));
  for (size_t i = data_start + 60; i < data_start + 64; ++i) EXPECT_EQ(r.bytes()[i], '\0');
  EXPECT_EQ(static_cast<uint8_t>(r.bytes()[data_start + 64]), 0xab);
  // The last tensor is padded too: the file ends on the alignment.
  EXPECT_EQ(r.bytes().size(), data_start + 64 + 160);
}

TEST_F(GgufWriterTest, OtherAlignmentsAreHonoured) {
  GgufWriter w(64);
  ASSERT_TRUE(w.AddTensor("t", {1, 3}, GgmlType::kF16).ok());
  ASSERT_TRUE(w.AddTensor("u", {2}, GgmlType::kF32).ok());
  ASSERT_TRUE(w.Open(Path("a.gguf")).ok());
  const uint16_t t[3] = {1, 2, 3};
  const float u[2] = {1, 2};
  ASSERT_TRUE(w.WriteTensorData("t", t, 6).ok());
  ASSERT_TRUE(w.WriteTensorData("u", u, 8).ok());
  ASSERT_TRUE(w.Close().ok());
  EXPECT_EQ(fs::file_size(Path("a.gguf")) % 64, 0u);
  Reader r(Path("a.gguf"));
  r.Get<uint32_t>();
  r.Get<uint32_t>();
  r.Get<uint64_t>();
  r.Get<uint64_t>();
  EXPECT_EQ(r.String(), "general.alignment");
  r.Get<uint32_t>();
  EXPECT_EQ(r.Get<uint32_t>(), 64u);
}

TEST_F(GgufWriterTest, RefusesToOverwriteAnExistingFile) {
  std::ofstream(Path("x.gguf")) << "keep me";
  GgufWriter w;
  Status s = w.Open(Path("x.gguf"));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("exists"), std::string::npos) << s.message();
  std::ifstream in(Path("x.gguf"));
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "keep me");
}

TEST_F(GgufWriterTest, RejectsMisuseWithMessagesNamingTheTensor) {
  GgufWriter w;
  Status bad_q8 = w.AddTensor("blk.0.ffn_down.weight", {4, 48}, GgmlType::kQ8_0);
  EXPECT_NE(bad_q8.message().find("blk.0.ffn_down.weight"), std::string::npos);
  EXPECT_NE(bad_q8.message().find("48"), std::string::npos);
  ASSERT_TRUE(w.AddTensor("a", {4}, GgmlType::kF32).ok());
  ASSERT_TRUE(w.AddTensor("b", {4}, GgmlType::kF32).ok());
  ASSERT_TRUE(w.Open(Path("y.gguf")).ok());
  const float v[4] = {};
  EXPECT_NE(w.WriteTensorData("b", v, 16).message().find("'a' was declared"), std::string::npos);
  EXPECT_NE(w.WriteTensorData("a", v, 12).message().find("16 declared"), std::string::npos);
  ASSERT_TRUE(w.WriteTensorData("a", v, 16).ok());
  EXPECT_NE(w.Close().message().find("'b' was declared but not written"), std::string::npos);

  GgufWriter twice;
  twice.AddString("k", "1");
  twice.AddString("k", "2");
  EXPECT_NE(twice.Open(Path("z.gguf")).message().find("'k' twice"), std::string::npos);
}

}  // namespace
}  // namespace qlorad::trainer
