// The model's forward against a plain fp64 reference written here with explicit loops for RoPE
// and attention, so a shared mistake (rotate_half layout, GQA head mapping, causal mask, where the
// norm casts) cannot hide in both.
#include "worker/trainer/model/llama_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace qlorad::trainer {
namespace {

LlamaConfig OneLayerConfig() {
  LlamaConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 40;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  return c;
}

std::map<std::string, at::Tensor> RandomWeights(const LlamaConfig& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto rand = [&](std::vector<int64_t> shape, double scale) {
    return at::randn(shape, gen, at::kDouble) * scale;
  };
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const double s = 1.0 / std::sqrt(static_cast<double>(c.hidden_size));
  std::map<std::string, at::Tensor> w;
  w["model.embed_tokens.weight"] = rand({c.vocab_size, c.hidden_size}, 1.0);
  const std::string p = "model.layers.0.";
  w[p + "self_attn.q_proj.weight"] = rand({q, c.hidden_size}, s);
  w[p + "self_attn.k_proj.weight"] = rand({kv, c.hidden_size}, s);
  w[p + "self_attn.v_proj.weight"] = rand({kv, c.hidden_size}, s);
  w[p + "self_attn.o_proj.weight"] = rand({c.hidden_size, q}, s);
  w[p + "mlp.gate_proj.weight"] = rand({c.intermediate_size, c.hidden_size}, s);
  w[p + "mlp.up_proj.weight"] = rand({c.intermediate_size, c.hidden_size}, s);
  w[p + "mlp.down_proj.weight"] = rand({c.hidden_size, c.intermediate_size}, s);
  w[p + "input_layernorm.weight"] = 1.0 + rand({c.hidden_size}, 0.1);
  w[p + "post_attention_layernorm.weight"] = 1.0 + rand({c.hidden_size}, 0.1);
  w["model.norm.weight"] = 1.0 + rand({c.hidden_size}, 0.1);
  w["lm_head.weight"] = rand({c.vocab_size, c.hidden_size}, s);
  return w;
}

LlamaModel Build(const LlamaConfig& c, const std::map<std::string, at::Tensor>& w,
                 at::ScalarType dtype) {
  auto model = BuildLlamaModel(
      c,
      [&](const std::string& name, const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
        const at::Tensor& t = w.at(name);
        if (t.sizes().vec() != shape) return InvalidArgument(name + ": shape");
        return t.to(at::kFloat);
      },
      at::Device(at::kCPU), dtype);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return *model;
}

// x [T, H] in fp64.
at::Tensor RefRmsNorm(const at::Tensor& x, const at::Tensor& w, double eps) {
  return x / at::sqrt(x.pow(2).mean(-1, true) + eps) * w;
}

// One sequence through embedding, one decoder layer, final norm and lm_head, in fp64.
at::Tensor ReferenceLogits(const LlamaConfig& c, std::map<std::string, at::Tensor> w,
                           const std::vector<int64_t>& ids) {
  for (auto& [name, t] : w) t = t.to(at::kFloat).to(at::kDouble);  // the model sees fp32 weights
  const int64_t T = static_cast<int64_t>(ids.size()), H = c.num_attention_heads,
                KV = c.num_key_value_heads, D = c.head_dim;
  const std::string p = "model.layers.0.";
  at::Tensor x = w["model.embed_tokens.weight"].index_select(0, at::tensor(ids, at::kLong));
  at::Tensor h = RefRmsNorm(x, w[p + "input_layernorm.weight"], c.rms_norm_eps);
  at::Tensor q = at::matmul(h, w[p + "self_attn.q_proj.weight"].t()).contiguous();
  at::Tensor k = at::matmul(h, w[p + "self_attn.k_proj.weight"].t()).contiguous();
  at::Tensor v = at::matmul(h, w[p + "self_attn.v_proj.weight"].t()).contiguous();
  // RoPE, element by element: pair (i, i + D/2) rotated by angle pos * theta^(-2i/D).
  auto rope = [&](at::Tensor t, int64_t heads) {
    at::Tensor out = t.clone();
    auto a = t.accessor<double, 2>();
    auto o = out.accessor<double, 2>();
    for (int64_t pos = 0; pos < T; ++pos) {
      for (int64_t hd = 0; hd < heads; ++hd) {
        for (int64_t i = 0; i < D / 2; ++i) {
          const double angle = pos * std::pow(c.rope_theta, -2.0 * i / D);
          const double x1 = a[pos][hd * D + i], x2 = a[pos][hd * D + i + D / 2];
          o[pos][hd * D + i] = x1 * std::cos(angle) - x2 * std::sin(angle);
          o[pos][hd * D + i + D / 2] = x2 * std::cos(angle) + x1 * std::sin(angle);
        }
      }
    }
    return out;
  };
  q = rope(q, H);
  k = rope(k, KV);
  at::Tensor attn = at::zeros({T, H * D}, at::kDouble);
  auto qa = q.accessor<double, 2>(), ka = k.accessor<double, 2>(), va = v.accessor<double, 2>();
  auto out = attn.accessor<double, 2>();
  for (int64_t hd = 0; hd < H; ++hd) {
    const int64_t kvh = hd / (H / KV);  // query heads share KV heads in consecutive groups
    for (int64_t i = 0; i < T; ++i) {
      std::vector<double> scores;
      double max_score = -1e300;
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += qa[i][hd * D + d] * ka[j][kvh * D + d];
        scores.push_back(s / std::sqrt(static_cast<double>(D)));
        max_score = std::max(max_score, scores.back());
      }
      double total = 0;
      for (double& s : scores) total += (s = std::exp(s - max_score));
      for (int64_t j = 0; j <= i; ++j) {
        for (int64_t d = 0; d < D; ++d)
          out[i][hd * D + d] += scores[j] / total * va[j][kvh * D + d];
      }
    }
  }
  x = x + at::matmul(attn, w[p + "self_attn.o_proj.weight"].t());
  h = RefRmsNorm(x, w[p + "post_attention_layernorm.weight"], c.rms_norm_eps);
  at::Tensor gate = at::matmul(h, w[p + "mlp.gate_proj.weight"].t());
  at::Tensor up = at::matmul(h, w[p + "mlp.up_proj.weight"].t());
  at::Tensor act = gate / (1.0 + at::exp(-gate)) * up;
  x = x + at::matmul(act, w[p + "mlp.down_proj.weight"].t());
  x = RefRmsNorm(x, w["model.norm.weight"], c.rms_norm_eps);
  return at::matmul(x, w["lm_head.weight"].t());
}

TEST(LlamaModelTest, Fp32ForwardMatchesFp64Reference) {
  const LlamaConfig c = OneLayerConfig();
  const auto w = RandomWeights(c, 1);
  LlamaModel model = Build(c, w, at::kFloat);
  const std::vector<std::vector<int64_t>> seqs = {{1, 5, 9, 2, 33, 7, 0, 39, 12, 4},
                                                  {3, 3, 3, 17, 25, 8, 1, 2, 38, 11}};
  at::Tensor ids = at::tensor(std::vector<int64_t>{1, 5, 9, 2,  33, 7, 0, 39, 12, 4,
                                                   3, 3, 3, 17, 25, 8, 1, 2,  38, 11},
                              at::kLong)
                       .view({2, 10});
  at::NoGradGuard no_grad;
  at::Tensor logits = model->Logits(model->forward(ids));
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 10, c.vocab_size}));
  for (size_t b = 0; b < seqs.size(); ++b) {
    at::Tensor ref = ReferenceLogits(c, w, seqs[b]);
    at::Tensor got = logits[static_cast<int64_t>(b)].to(at::kDouble);
    const double max_err = (got - ref).abs().max().item<double>();
    // fp32 accumulations over a few dozen terms of O(1) values: errors ~1e-6.
    EXPECT_LT(max_err, 5e-5) << "sequence " << b;
    EXPECT_GT(ref.abs().max().item<double>(), 0.1);  // the comparison is not vacuous
  }
}

TEST(LlamaModelTest, Bf16ForwardStaysWithinBf16ToleranceOfReference) {
  const LlamaConfig c = OneLayerConfig();
  const auto w = RandomWeights(c, 2);
  LlamaModel model = Build(c, w, at::kBFloat16);
  const std::vector<int64_t> seq = {4, 8, 15, 16, 23, 39, 0, 1};
  at::NoGradGuard no_grad;
  at::Tensor got = model->Logits(model->forward(at::tensor(seq, at::kLong).view({1, 8})))[0];
  EXPECT_EQ(got.scalar_type(), at::kFloat);  // logits always come back in fp32
  at::Tensor ref = ReferenceLogits(c, w, seq);
  const double scale = ref.abs().max().item<double>();
  // bf16 has 8 mantissa bits (~4e-3 relative); a layer of roundings compounds to a few 1e-2.
  EXPECT_LT((got.to(at::kDouble) - ref).abs().max().item<double>(), 5e-2 * scale);
}

TEST(LlamaModelTest, CausalityLaterTokensDoNotChangeEarlierLogits) {
  const LlamaConfig c = OneLayerConfig();
  LlamaModel model = Build(c, RandomWeights(c, 3), at::kFloat);
  at::NoGradGuard no_grad;
  at::Tensor a = model->Logits(
      model->forward(at::tensor(std::vector<int64_t>{1, 2, 3, 4}, at::kLong).view({1, 4})));
  at::Tensor b = model->Logits(
      model->forward(at::tensor(std::vector<int64_t>{1, 2, 3, 30}, at::kLong).view({1, 4})));
  EXPECT_TRUE(at::allclose(a.narrow(1, 0, 3), b.narrow(1, 0, 3), 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(a.narrow(1, 3, 1), b.narrow(1, 3, 1), 1e-5, 1e-6));
}

TEST(LlamaModelTest, TiedEmbeddingsNeedNoLmHead) {
  LlamaConfig c = OneLayerConfig();
  c.tie_word_embeddings = true;
  auto w = RandomWeights(c, 4);
  w.erase("lm_head.weight");
  LlamaModel model = Build(c, w, at::kFloat);
  at::NoGradGuard no_grad;
  at::Tensor hidden =
      model->forward(at::tensor(std::vector<int64_t>{5, 6}, at::kLong).view({1, 2}));
  at::Tensor expected = at::matmul(hidden, w["model.embed_tokens.weight"].to(at::kFloat).t());
  EXPECT_TRUE(at::allclose(model->Logits(hidden), expected, 1e-5, 1e-6));
}

TEST(LlamaModelTest, MissingWeightFailsWithItsName) {
  const LlamaConfig c = OneLayerConfig();
  auto w = RandomWeights(c, 5);
  auto model = BuildLlamaModel(
      c,
      [&](const std::string& name, const std::vector<int64_t>&) -> StatusOr<at::Tensor> {
        if (name.find("v_proj") != std::string::npos)
          return InvalidArgument("tensor '" + name + "' is missing");
        return w.at(name).to(at::kFloat);
      },
      at::Device(at::kCPU), at::kFloat);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("model.layers.0.self_attn.v_proj.weight"),
            std::string::npos);
}

}  // namespace
}  // namespace qlorad::trainer
