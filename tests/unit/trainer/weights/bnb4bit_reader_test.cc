// Bitsandbytes 4-bit checkpoints written the way transformers lays them out (weight + the packed
// QuantState tensors), built here with our own quantizer and safetensors writer.
#include "worker/trainer/weights/bnb4bit_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "kernels/nf4_format.h"
#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/model/model_loader.h"
#include "worker/trainer/model/qlora.h"
#include "worker/trainer/model/tiny_model.h"
#include "worker/trainer/parallel/shard_on_load.h"
#include "worker/trainer/train/trainer.h"
#include "worker/trainer/weights/safetensors_torch.h"

namespace qlorad::trainer {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;
using Tensors = std::vector<std::pair<std::string, at::Tensor>>;

at::Tensor BytesOf(const std::string& text) {
  at::Tensor t = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  std::memcpy(t.data_ptr(), text.data(), text.size());
  return t;
}

std::string BnbDtypeName(at::ScalarType dtype) {
  return dtype == at::kFloat ? "float32" : dtype == at::kHalf ? "float16" : "bfloat16";
}

// The quant_state JSON of QuantState.as_dict(packed=True) for `q`.
json QuantStateJson(const ops::NF4Weight& q, const std::string& quant_type = "nf4") {
  json j = {{"quant_type", quant_type},
            {"blocksize", q.blocksize},
            {"dtype", BnbDtypeName(q.dtype)},
            {"shape", q.shape}};
  if (q.double_quant) {
    j["nested_blocksize"] = 256;
    j["nested_dtype"] = "float32";
    j["nested_offset"] = static_cast<double>(q.offset.item<float>());
  }
  return j;
}

// Appends the tensors bnb's Linear4bit saves for `weight_name`.
void AppendBnbTensors(Tensors& out, const std::string& weight_name, const ops::NF4Weight& q,
                      const std::string& quant_type = "nf4") {
  out.emplace_back(weight_name, q.packed.view({-1, 1}));
  out.emplace_back(weight_name + ".absmax", q.absmax);
  out.emplace_back(weight_name + ".quant_map", at::tensor(at::ArrayRef<float>(kernels::kNF4Code)));
  if (q.double_quant) {
    out.emplace_back(weight_name + ".nested_absmax", q.nested_absmax);
    out.emplace_back(weight_name + ".nested_quant_map", q.nested_code);
  }
  out.emplace_back(weight_name + ".quant_state.bitsandbytes__" + quant_type,
                   BytesOf(QuantStateJson(q, quant_type).dump()));
}

void WriteModel(const std::string& dir, const Tensors& tensors) {
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(SaveTensors(dir + "/model.safetensors", tensors).ok());
}

bool BitEqual(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.numel() == b.numel() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(),
                     a.numel() * a.element_size()) == 0;
}

// A copy of the tiny model in bnb's 4-bit layout: every projection quantized by our quantizer
// (nf4, blocksize 64, double quant) from its fp32 weight, config.json with quantization_config.
void MakeBnbTinyModel(const std::string& dense_dir, const std::string& bnb_dir) {
  auto file = SafetensorsFile::Open(dense_dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  Tensors tensors;
  for (const auto& info : file->tensors()) {
    auto t = ReadTensor(*file, info);
    ASSERT_TRUE(t.ok());
    if (info.name.find("_proj.weight") != std::string::npos) {
      AppendBnbTensors(tensors, info.name, ops::QuantizeNF4(t->to(at::kFloat), 64, true));
    } else {
      tensors.emplace_back(info.name, *t);
    }
  }
  WriteModel(bnb_dir, tensors);
  json config = json::parse(ReadFile(dense_dir + "/config.json"));
  config["quantization_config"] = {{"quant_method", "bitsandbytes"},
                                   {"load_in_4bit", true},
                                   {"load_in_8bit", false},
                                   {"bnb_4bit_quant_type", "nf4"},
                                   {"bnb_4bit_use_double_quant", true},
                                   {"bnb_4bit_compute_dtype", "float32"}};
  WriteFile(bnb_dir + "/config.json", config.dump(2));
}

class Bnb4bitReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef QLORAD_HAVE_NF4_OPS
    GTEST_SKIP() << "built without qlorad_ops";
#endif
  }

  // Writes one bnb weight of `shape` and returns what the loader makes of it.
  StatusOr<ops::NF4Weight> RoundTrip(const ops::NF4Weight& q, const std::vector<int64_t>& shape,
                                     const std::function<void(Tensors&)>& edit = nullptr) {
    Tensors tensors;
    AppendBnbTensors(tensors, kName, q);
    if (edit) edit(tensors);
    WriteModel(dir_ / "m", tensors);
    auto weights = HfWeights::Open(dir_ / "m");
    if (!weights.ok()) return weights.status();
    return LoadBnbNF4Weight(*weights, kName, shape);
  }

  static constexpr const char* kName = "model.layers.0.mlp.up_proj.weight";
  TempDir dir_;
};

TEST_F(Bnb4bitReaderTest, StoredTensorsAreUsedBitForBit) {
  struct Case {
    std::vector<int64_t> shape;
    at::ScalarType dtype;
    int64_t blocksize;
    bool double_quant;
  };
  // Odd element counts and partial blocks (33 x 63 = 2079), more than 256 blocks (nested blocks
  // > 1), no double quantization, half-precision originals.
  const Case cases[] = {{{33, 63}, at::kFloat, 64, true},
                        {{176, 128}, at::kBFloat16, 64, true},
                        {{40, 70}, at::kHalf, 128, false}};
  for (const Case& c : cases) {
    at::Tensor w =
        at::randn(c.shape, at::make_generator<at::CPUGeneratorImpl>(7), at::kFloat).to(c.dtype);
    const ops::NF4Weight q = ops::QuantizeNF4(w, c.blocksize, c.double_quant);
    auto loaded = RoundTrip(q, c.shape);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    EXPECT_EQ(loaded->shape, c.shape);
    EXPECT_EQ(loaded->blocksize, c.blocksize);
    EXPECT_EQ(loaded->double_quant, c.double_quant);
    EXPECT_EQ(loaded->dtype, c.dtype);
    EXPECT_TRUE(BitEqual(loaded->packed, q.packed));
    EXPECT_TRUE(BitEqual(loaded->absmax, q.absmax));
    if (c.double_quant) {
      EXPECT_TRUE(BitEqual(loaded->nested_absmax, q.nested_absmax));
      EXPECT_TRUE(BitEqual(loaded->nested_code, q.nested_code));
      EXPECT_TRUE(BitEqual(loaded->offset, q.offset));  // through JSON and back, exactly
    } else {
      EXPECT_FALSE(loaded->nested_absmax.defined());
    }
    for (at::ScalarType out : {at::kFloat, at::kBFloat16}) {
      EXPECT_TRUE(BitEqual(ops::DequantizeNF4(*loaded, out), ops::DequantizeNF4(q, out)));
    }
  }
}

TEST_F(Bnb4bitReaderTest, Fp4IsRefusedNamingFileAndTensor) {
  const ops::NF4Weight q = ops::QuantizeNF4(at::randn({8, 64}), 64, true);
  Tensors tensors;
  AppendBnbTensors(tensors, kName, q, "fp4");
  WriteModel(dir_ / "m", tensors);
  auto weights = HfWeights::Open(dir_ / "m");
  ASSERT_TRUE(weights.ok());
  EXPECT_TRUE(IsBnb4bitWeight(*weights, kName));
  auto loaded = LoadBnbNF4Weight(*weights, kName, {8, 64});
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr(dir_ / "m/model.safetensors"));
  EXPECT_THAT(loaded.status().message(),
              HasSubstr(std::string(kName) + ".quant_state.bitsandbytes__fp4"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("fp4 is not supported"));

  // fp4 declared inside the nf4-named state is refused as well.
  auto inner = RoundTrip(
      q, {8, 64}, [&](Tensors& t) { t.back().second = BytesOf(QuantStateJson(q, "fp4").dump()); });
  ASSERT_FALSE(inner.ok());
  EXPECT_THAT(inner.status().message(), HasSubstr("quant_type: 'fp4' is not supported"));
}

TEST_F(Bnb4bitReaderTest, MissingCompanionIsNamed) {
  const ops::NF4Weight q = ops::QuantizeNF4(at::randn({8, 64}), 64, true);
  for (const std::string suffix : {".absmax", ".nested_absmax", ".quant_map"}) {
    auto loaded = RoundTrip(q, {8, 64}, [&](Tensors& t) {
      std::erase_if(t, [&](const auto& p) { return p.first == kName + suffix; });
    });
    ASSERT_FALSE(loaded.ok()) << suffix;
    EXPECT_THAT(loaded.status().message(), HasSubstr("'" + std::string(kName) + suffix + "'"));
    EXPECT_THAT(loaded.status().message(), HasSubstr("is missing"));
  }
}

TEST_F(Bnb4bitReaderTest, BadQuantStateIsAClearError) {
  const ops::NF4Weight q = ops::QuantizeNF4(at::randn({8, 64}), 64, true);
  const std::string state = std::string(kName) + ".quant_state.bitsandbytes__nf4";
  auto replace_state = [&](const std::string& text) {
    return [text](Tensors& t) { t.back().second = BytesOf(text); };
  };
  json no_blocksize = QuantStateJson(q);
  no_blocksize.erase("blocksize");
  json bad_nested = QuantStateJson(q);
  bad_nested["nested_blocksize"] = 128;
  const std::pair<std::string, std::string> cases[] = {
      {"{\"quant_type\": \"nf4\", ", "not valid JSON"},
      {no_blocksize.dump(), "blocksize: missing"},
      {bad_nested.dump(), "nested_blocksize: 128 is not supported"},
  };
  for (const auto& [text, want] : cases) {
    auto loaded = RoundTrip(q, {8, 64}, replace_state(text));
    ASSERT_FALSE(loaded.ok()) << text;
    EXPECT_THAT(loaded.status().message(), HasSubstr(dir_ / "m/model.safetensors"));
    EXPECT_THAT(loaded.status().message(), HasSubstr(state));
    EXPECT_THAT(loaded.status().message(), HasSubstr(want));
  }
  auto wrong_shape = RoundTrip(q, {64, 8});
  ASSERT_FALSE(wrong_shape.ok());
  EXPECT_THAT(wrong_shape.status().message(), HasSubstr("shape [8,64] differs"));
  // A quant_map that is not the NF4 table cannot be dequantized by our NF4 kernels.
  auto other_map = RoundTrip(q, {8, 64}, [](Tensors& t) { t[2].second = at::linspace(-1, 1, 16); });
  ASSERT_FALSE(other_map.ok());
  EXPECT_THAT(other_map.status().message(), HasSubstr("not the NF4 code table"));
}

TEST_F(Bnb4bitReaderTest, QuantizationConfigIsReadAndOnlyNf4Accepted) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir / "dense", 0).ok());
  auto none = ReadBnbQuantization(dir / "dense");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  MakeBnbTinyModel(dir / "dense", dir / "bnb");
  auto nf4 = ReadBnbQuantization(dir / "bnb");
  ASSERT_TRUE(nf4.ok()) << nf4.status().ToString();
  ASSERT_TRUE(nf4->has_value());
  EXPECT_EQ((*nf4)->quant_type, "nf4");
  EXPECT_TRUE((*nf4)->double_quant);

  json config = json::parse(ReadFile(dir / "bnb/config.json"));
  config["quantization_config"]["bnb_4bit_quant_type"] = "fp4";
  WriteFile(dir / "bnb/config.json", config.dump());
  auto fp4 = ReadBnbQuantization(dir / "bnb");
  ASSERT_FALSE(fp4.ok());
  EXPECT_THAT(fp4.status().message(), HasSubstr(dir / "bnb/config.json"));
  EXPECT_THAT(fp4.status().message(), HasSubstr("quantization_config.bnb_4bit_quant_type: 'fp4'"));
  config["quantization_config"]["load_in_4bit"] = false;
  config["quantization_config"]["load_in_8bit"] = true;
  WriteFile(dir / "bnb/config.json", config.dump());
  EXPECT_THAT(ReadBnbQuantization(dir / "bnb").status().message(),
              HasSubstr("quantization_config.load_in_4bit"));
}

// Every projection of `a` is NF4 and dequantizes to exactly what `b`'s does; with
// `same_packing`, their packed bytes are equal too.
void ExpectSameQuantizedProjections(const LlamaModel& a, const LlamaModel& b, bool same_packing) {
  const auto mine = a->NamedLinears(), reference = b->NamedLinears();
  ASSERT_EQ(mine.size(), reference.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    const auto& [name, layer] = mine[i];
    ASSERT_TRUE(layer->quantized()) << name;
    if (same_packing) {
      EXPECT_TRUE(at::equal(layer->nf4_weight()->packed, reference[i].second->nf4_weight()->packed))
          << name;
    }
    EXPECT_TRUE(
        BitEqual(layer->BaseWeight(at::kFloat), reference[i].second->BaseWeight(at::kFloat)))
        << name;
  }
}

// Loading the bnb copy must give the very model that loading the dense original and quantizing
// it gives: same NF4 bytes in every projection, the other tensors untouched.
TEST_F(Bnb4bitReaderTest, PrequantizedModelEqualsQuantizingTheOriginal) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir / "dense", 0).ok());
  MakeBnbTinyModel(dir / "dense", dir / "bnb");
  const LlamaConfig config = TinyLlamaConfig();
  auto bnb = LoadLlamaModel(dir / "bnb", config, true, at::kCPU, at::kFloat);
  ASSERT_TRUE(bnb.ok()) << bnb.status().ToString();
  EXPECT_EQ(bnb->prequantized_layers, 7 * config.num_hidden_layers);
  auto dense = LoadLlamaModel(dir / "dense", config, false, at::kCPU, at::kFloat);
  ASSERT_TRUE(dense.ok());
  ASSERT_TRUE(ApplyQLora(dense->model, {QuantizationType::kNf4, true, 64}, {}, 0).ok());
  ExpectSameQuantizedProjections(bnb->model, dense->model, /*same_packing=*/false);
  at::Tensor ids = at::arange(0, 24, at::kLong).view({2, 12});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(BitEqual(bnb->model->forward(ids), dense->model->forward(ids)));

  // A quantized tensor that is not a projection (bnb never stores one) is refused.
  Tensors tensors;
  auto file = SafetensorsFile::Open(dir / "bnb/model.safetensors");
  ASSERT_TRUE(file.ok());
  for (const auto& info : file->tensors()) {
    if (info.name.rfind("model.norm.weight", 0) != 0)
      tensors.emplace_back(info.name, *ReadTensor(*file, info));
  }
  AppendBnbTensors(tensors, "model.norm.weight",
                   ops::QuantizeNF4(at::ones({config.hidden_size}), 64, true));
  WriteModel(dir / "bnb", tensors);
  auto odd = LoadLlamaModel(dir / "bnb", config, true, at::kCPU, at::kFloat);
  ASSERT_FALSE(odd.ok());
  EXPECT_THAT(odd.status().message(), HasSubstr("'model.norm.weight' is stored in bitsandbytes"));
}

// Quantizing the projections as they load (what the trainer does for quantization nf4) gives the
// very model that loading dense and then quantizing gives, in fp32 and in bf16; the embedding,
// norms and head stay dense, and ApplyQLora leaves the already-quantized layers as they are.
TEST_F(Bnb4bitReaderTest, QuantizingOnLoadEqualsQuantizingAfterLoading) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir / "dense", 0).ok());
  const LlamaConfig config = TinyLlamaConfig();
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    auto on_load =
        LoadLlamaModel(dir / "dense", config, false, at::kCPU, dtype, QuantizeOnLoad{64, true});
    ASSERT_TRUE(on_load.ok()) << on_load.status().ToString();
    EXPECT_EQ(on_load->prequantized_layers, 0);  // quantized here, not stored quantized
    auto summary = ApplyQLora(on_load->model, {QuantizationType::kNf4, true, 64}, {}, 0);
    ASSERT_TRUE(summary.ok());
    EXPECT_EQ(summary->quantized_layers, 7 * config.num_hidden_layers);
    auto after = LoadLlamaModel(dir / "dense", config, false, at::kCPU, dtype);
    ASSERT_TRUE(after.ok());
    ASSERT_TRUE(ApplyQLora(after->model, {QuantizationType::kNf4, true, 64}, {}, 0).ok());
    ExpectSameQuantizedProjections(on_load->model, after->model, /*same_packing=*/true);
    EXPECT_FALSE(on_load->model->lm_head_linear()->quantized());
    at::Tensor ids = at::arange(0, 24, at::kLong).view({2, 12});
    at::NoGradGuard no_grad;
    EXPECT_TRUE(BitEqual(on_load->model->forward(ids), after->model->forward(ids)))
        << c10::toString(dtype);
  }
}

// A tensor that stands in for a weight kept elsewhere holds one element, whatever its shape.
bool IsPlaceholder(const at::Tensor& t) {
  return t.numel() > 1 && t.storage().nbytes() == static_cast<size_t>(t.element_size());
}

// A sharded load (fsdp) keeps, for each decoder projection, exactly the rank's shard that cutting
// the unsharded load's weight gives, and leaves a placeholder in the layer: for the stored NF4 of
// a bnb checkpoint, for NF4 quantized as it loads, and for a dense projection. Three ranks, so
// the blocks do not split evenly and the last shard is padded. The rest of the model is whole.
TEST_F(Bnb4bitReaderTest, ShardedLoadKeepsOnlyTheRanksShardOfEachProjection) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir / "dense", 0).ok());
  MakeBnbTinyModel(dir / "dense", dir / "bnb");
  const LlamaConfig config = TinyLlamaConfig();
  constexpr int kWorld = 3;
  struct Case {
    const char* model;
    bool prequantized;
    std::optional<QuantizeOnLoad> quantize;
  };
  for (const Case& c : {Case{"bnb", true, std::nullopt}, Case{"dense", false, QuantizeOnLoad{}},
                        Case{"dense", false, std::nullopt}}) {
    SCOPED_TRACE(std::string(c.model) + (c.quantize ? " quantized on load" : ""));
    auto whole =
        LoadLlamaModel(dir / c.model, config, c.prequantized, at::kCPU, at::kBFloat16, c.quantize);
    ASSERT_TRUE(whole.ok()) << whole.status().ToString();
    for (int rank = 0; rank < kWorld; ++rank) {
      parallel::ShardOnLoad sink(rank, kWorld, /*on_host=*/false);
      auto sharded = LoadLlamaModel(dir / c.model, config, c.prequantized, at::kCPU, at::kBFloat16,
                                    c.quantize, &sink);
      ASSERT_TRUE(sharded.ok()) << sharded.status().ToString();
      EXPECT_EQ(sharded->prequantized_layers, whole->prequantized_layers);
      const auto mine = sharded->model->NamedLinears(), all = whole->model->NamedLinears();
      ASSERT_EQ(mine.size(), all.size());
      EXPECT_EQ(sink.shards().size(), mine.size());
      for (size_t i = 0; i < mine.size(); ++i) {
        const auto& [name, layer] = mine[i];
        const QLoraLinearImpl& reference = *all[i].second;
        ASSERT_EQ(layer->quantized(), reference.quantized()) << name;
        const auto it = sink.shards().find(name);
        ASSERT_NE(it, sink.shards().end()) << name;
        const parallel::FrozenShard expected =
            reference.quantized()
                ? parallel::ShardNF4Weight(*reference.nf4_weight(), rank, kWorld)
                : parallel::ShardDenseWeight(reference.dense_weight(), rank, kWorld);
        ASSERT_EQ(it->second.pieces.size(), expected.pieces.size()) << name;
        EXPECT_EQ(it->second.nf4.has_value(), expected.nf4.has_value()) << name;
        for (size_t p = 0; p < expected.pieces.size(); ++p) {
          EXPECT_TRUE(at::equal(it->second.pieces[p].local, expected.pieces[p].local))
              << name << " piece " << p << " rank " << rank;
          EXPECT_EQ(it->second.pieces[p].spec.rows_per_rank, expected.pieces[p].spec.rows_per_rank)
              << name;
        }
        if (layer->quantized()) {
          EXPECT_TRUE(IsPlaceholder(layer->nf4_weight()->packed)) << name;
          EXPECT_TRUE(IsPlaceholder(layer->nf4_weight()->absmax)) << name;
          EXPECT_TRUE(
              at::equal(layer->nf4_weight()->nested_absmax, reference.nf4_weight()->nested_absmax))
              << name;
        } else {
          EXPECT_TRUE(IsPlaceholder(layer->dense_weight())) << name;
        }
      }
      EXPECT_TRUE(BitEqual(sharded->model->lm_head_linear()->dense_weight(),
                           whole->model->lm_head_linear()->dense_weight()));
    }
  }
}

// Training on the bnb copy with quantization nf4 reproduces training on the original with
// quantization nf4 step for step (same seed); type none on the bnb copy is refused.
TEST_F(Bnb4bitReaderTest, TrainingOnThePrequantizedCopyMatchesQuantizingAtLoad) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyModel(dir / "dense", 0).ok());
  MakeBnbTinyModel(dir / "dense", dir / "bnb");
  std::string data;
  for (int i = 0; i < 16; ++i)
    data += "{\"text\": \"the quick brown fox " + std::to_string(i) + "\"}\n";
  WriteFile(dir / "data.jsonl", data);
  auto spec = [&](const std::string& model, const std::string& quant) {
    auto s = ParseJobSpec(
        "name: bnb\nmodel: {path: " + dir / model + "}\nquantization: {type: " + quant +
        "}\nlora: {r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, "
        "down_proj]}\ndata: {path: " +
        dir / "data.jsonl" +
        ", max_seq_len: 16}\ntrain: {max_steps: 4, micro_batch_size: 2, lr: "
        "1.0e-2, scheduler: constant, warmup_steps: 0, precision: fp32, seed: "
        "5}\nresources: {device: cpu}\ncheckpoint: {every_steps: 0, output_dir: " +
        dir / ("out-" + model + "-" + quant) + "}\n");
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return *s;
  };
  auto run = [](const JobSpec& s, std::string* events_out) {
    std::ostringstream out, err;
    EventSink events(true, out, err);
    auto result = Train(s, {}, events);
    *events_out = out.str();
    return result;
  };
  std::string dense_events, bnb_events, none_events;
  auto dense = run(spec("dense", "nf4"), &dense_events);
  ASSERT_TRUE(dense.ok()) << dense.status().ToString();
  auto bnb = run(spec("bnb", "nf4"), &bnb_events);
  ASSERT_TRUE(bnb.ok()) << bnb.status().ToString();
  ASSERT_EQ(dense->losses.size(), 4u);
  EXPECT_EQ(bnb->losses, dense->losses);
  EXPECT_THAT(bnb_events, HasSubstr("using its stored quantization"));
  EXPECT_THAT(bnb_events, HasSubstr("quantized 14 linear layers (nf4)"));
  auto none = run(spec("bnb", "none"), &none_events);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("quantization.type: 'none'"));
}

}  // namespace
}  // namespace qlorad::trainer
