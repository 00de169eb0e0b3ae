// The HF -> GGUF model mapping on real (tiny) model directories: tensor
// names, order and llama-quantize's per-tensor types (src/llama-quant.cpp,
// llama_tensor_get_type), the converter's Q/K rope permutation
// (convert_hf_to_gguf LlamaModel.permute), and the GGUF output format's
// per-module schemes.
#include "gptq/gguf/gguf_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "gptq/core/error.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/gguf/ggml_grid.h"
#include "gptq/gguf/gguf_format.h"
#include "gptq/io/safetensors.h"
#include "gptq/model/config.h"

namespace gptq::gguf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// llama-quantize's use_more_bits, the specification the plan must follow.
bool spec_use_more_bits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

struct Shape {
  int64_t hidden = 256, intermediate = 512, n_layers = 32, n_heads = 4, n_kv_heads = 2, vocab = 512;
  int64_t head_dim = 0;  // 0: hidden / n_heads, and no "head_dim" key
};

json config_json(const std::string& arch, const Shape& shape) {
  json config = {{"architectures", {arch}},
                 {"hidden_size", shape.hidden},
                 {"intermediate_size", shape.intermediate},
                 {"num_hidden_layers", shape.n_layers},
                 {"num_attention_heads", shape.n_heads},
                 {"num_key_value_heads", shape.n_kv_heads},
                 {"vocab_size", shape.vocab},
                 {"max_position_embeddings", 2048},
                 {"rms_norm_eps", 1e-5},
                 {"torch_dtype", "bfloat16"}};
  if (shape.head_dim > 0) config["head_dim"] = shape.head_dim;
  return config;
}

// The tensors of a dense Llama-like checkpoint (bf16 zeros: only shapes matter).
std::vector<std::pair<std::string, at::Tensor>> model_tensors(const Shape& shape, bool lm_head, bool qkv_bias,
                                                               bool qk_norm) {
  const int64_t head_dim = shape.head_dim > 0 ? shape.head_dim : shape.hidden / shape.n_heads;
  const int64_t q_rows = shape.n_heads * head_dim, kv_rows = shape.n_kv_heads * head_dim;
  auto t = [](std::vector<int64_t> dims) { return at::zeros(dims, at::kBFloat16); };
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"model.embed_tokens.weight", t({shape.vocab, shape.hidden})}, {"model.norm.weight", t({shape.hidden})}};
  if (lm_head) tensors.push_back({"lm_head.weight", t({shape.vocab, shape.hidden})});
  for (int64_t layer = 0; layer < shape.n_layers; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    tensors.push_back({p + "input_layernorm.weight", t({shape.hidden})});
    tensors.push_back({p + "post_attention_layernorm.weight", t({shape.hidden})});
    tensors.push_back({p + "self_attn.q_proj.weight", t({q_rows, shape.hidden})});
    tensors.push_back({p + "self_attn.k_proj.weight", t({kv_rows, shape.hidden})});
    tensors.push_back({p + "self_attn.v_proj.weight", t({kv_rows, shape.hidden})});
    tensors.push_back({p + "self_attn.o_proj.weight", t({shape.hidden, q_rows})});
    tensors.push_back({p + "mlp.gate_proj.weight", t({shape.intermediate, shape.hidden})});
    tensors.push_back({p + "mlp.up_proj.weight", t({shape.intermediate, shape.hidden})});
    tensors.push_back({p + "mlp.down_proj.weight", t({shape.hidden, shape.intermediate})});
    if (qkv_bias) {
      tensors.push_back({p + "self_attn.q_proj.bias", t({q_rows})});
      tensors.push_back({p + "self_attn.k_proj.bias", t({kv_rows})});
      tensors.push_back({p + "self_attn.v_proj.bias", t({kv_rows})});
    }
    if (qk_norm) {
      tensors.push_back({p + "self_attn.q_norm.weight", t({head_dim})});
      tensors.push_back({p + "self_attn.k_norm.weight", t({head_dim})});
    }
  }
  return tensors;
}

fs::path test_root() {
  return fs::temp_directory_path() / ("gguf_model_test_" + std::to_string(::getpid()));
}

// A model directory: config.json and model.safetensors.
fs::path make_model(const std::string& name, const json& config,
                    const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  const fs::path dir = test_root() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  io::save_file(dir / "model.safetensors", tensors);
  return dir;
}

struct Loaded {
  model::ModelConfig config;
  io::Checkpoint checkpoint;
};
Loaded load(const fs::path& dir) { return {model::load_model_config(dir), io::Checkpoint::open(dir)}; }

GgufModelPlan plan_of(const Loaded& model, const std::string& file_type) {
  return plan_gguf_model(model.config, model.checkpoint, parse_gguf_file_type(file_type));
}

std::string type_name(GgmlType type) { return std::string(type_info(type).name); }

// Type of the GGUF tensor `name` in `plan` ("" when absent).
std::string type_of(const GgufModelPlan& plan, const std::string& name) {
  for (const auto& tensor : plan.tensors) {
    if (tensor.name == name) return type_name(tensor.type);
  }
  return "";
}

// A 32-layer Llama-shaped checkpoint shared by the tests below (written once).
class GgufModel32 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(make_model("llama32", config_json("LlamaForCausalLM", Shape{}),
                                   model_tensors(Shape{}, /*lm_head=*/true, false, false)));
  }
  static void TearDownTestSuite() {
    fs::remove_all(test_root());
    delete dir_;
    dir_ = nullptr;
  }
  static fs::path* dir_;

  // The index llama-quantize's attn_v / ffn_down counters have reached at
  // each layer. llama_model_quantize_impl walks ml.weights_map, a std::map
  // ordered by llama_model_loader::weight_name_comparer (the number after
  // "blk.", then the name), not the file's order (only --keep-split sorts by
  // file offset): the counter is the layer number even though the converter
  // writes layer "10" before layer "2". Checked against llama-quantize
  // --dry-run Q4_K_M / Q4_K_S of the vendored llama.cpp on a 16-layer file
  // written in string order: Q6_K on layers 0,1,4,7,10,13,14,15; Q4_K_S's
  // Q5_K attn_v on layers 0-3 and ffn_down on 0-1.
  static std::map<int, int> quantize_positions(int n_layers) {
    std::map<int, int> positions;
    for (int layer = 0; layer < n_layers; ++layer) positions[layer] = layer;
    return positions;
  }
};
fs::path* GgufModel32::dir_ = nullptr;

TEST_F(GgufModel32, OrderNamesAndShapesFollowTheConverter) {
  const Loaded model = load(*dir_);
  const GgufModelPlan plan = plan_of(model, "q4_k_m");
  EXPECT_EQ(plan.architecture, "llama");
  EXPECT_EQ(plan.file_type, GgufFileType::kQ4_K_M);
  EXPECT_FALSE(plan.rope_freqs.defined());
  ASSERT_EQ(plan.tensors.size(), 3u + 32u * 9u);
  std::vector<std::string> hf_names;
  for (const auto& tensor : plan.tensors) hf_names.push_back(tensor.hf_name);
  EXPECT_TRUE(std::is_sorted(hf_names.begin(), hf_names.end()));
  EXPECT_EQ(plan.tensors.front().name, "output.weight");  // "lm_head" sorts first
  EXPECT_EQ(plan.tensors[1].name, "token_embd.weight");
  EXPECT_EQ(plan.tensors[2].name, "blk.0.attn_norm.weight");
  EXPECT_EQ(plan.tensors.back().name, "output_norm.weight");
  const std::map<std::string, std::string> names = {
      {"model.layers.10.self_attn.q_proj.weight", "blk.10.attn_q.weight"},
      {"model.layers.10.self_attn.k_proj.weight", "blk.10.attn_k.weight"},
      {"model.layers.10.self_attn.v_proj.weight", "blk.10.attn_v.weight"},
      {"model.layers.10.self_attn.o_proj.weight", "blk.10.attn_output.weight"},
      {"model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight"},
      {"model.layers.3.mlp.up_proj.weight", "blk.3.ffn_up.weight"},
      {"model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight"},
      {"model.layers.31.input_layernorm.weight", "blk.31.attn_norm.weight"},
      {"model.layers.31.post_attention_layernorm.weight", "blk.31.ffn_norm.weight"},
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"}};
  for (const auto& [hf, gguf] : names) {
    const GgufTensorPlan* tensor = plan.find(hf);
    ASSERT_NE(tensor, nullptr) << hf;
    EXPECT_EQ(tensor->name, gguf);
    EXPECT_EQ(tensor->shape, model.checkpoint.info(hf).shape) << hf;
  }
  EXPECT_EQ(plan.find("model.layers.32.mlp.up_proj.weight"), nullptr);
}

TEST_F(GgufModel32, Q4KMTypesFollowLlamaQuantizesLayerOrderCounter) {
  const Loaded model = load(*dir_);
  const GgufModelPlan plan = plan_of(model, "Q4_K_M");
  const std::map<int, int> position = quantize_positions(32);
  int n_v_q6 = 0, n_down_q6 = 0;
  for (const auto& tensor : plan.tensors) {
    std::string expected = "q4_K";
    if (tensor.shape.size() == 1) {
      expected = "f32";
    } else if (tensor.name == "output.weight") {
      expected = "q6_K";
    } else if (tensor.name.ends_with(".attn_v.weight") || tensor.name.ends_with(".ffn_down.weight")) {
      const int layer = std::stoi(tensor.name.substr(4));
      if (spec_use_more_bits(position.at(layer), 32)) expected = "q6_K";
    }
    EXPECT_EQ(type_name(tensor.type), expected) << tensor.name;
    n_v_q6 += tensor.name.ends_with(".attn_v.weight") && tensor.type == GgmlType::kQ6_K;
    n_down_q6 += tensor.name.ends_with(".ffn_down.weight") && tensor.type == GgmlType::kQ6_K;
  }
  EXPECT_EQ(n_v_q6, 16);
  EXPECT_EQ(n_down_q6, 16);
  // Spot checks where the file's order ("0", "1", "10", ..., "19", "2", ...)
  // and llama-quantize's layer order disagree: by file position layer 31 is
  // 26th (Q4_K), layer 3 the 24th (Q4_K), layer 11 the 4th (Q6_K); by layer
  // number 31 and 3 are in the last / first eighth and 11 is not picked.
  EXPECT_EQ(type_of(plan, "blk.9.ffn_down.weight"), "q6_K");
  EXPECT_EQ(type_of(plan, "blk.31.ffn_down.weight"), "q6_K");
  EXPECT_EQ(type_of(plan, "blk.31.attn_v.weight"), "q6_K");
  EXPECT_EQ(type_of(plan, "blk.2.attn_v.weight"), "q6_K");
  EXPECT_EQ(type_of(plan, "blk.3.attn_v.weight"), "q6_K");
  EXPECT_EQ(type_of(plan, "blk.11.attn_v.weight"), "q4_K");
  EXPECT_EQ(type_of(plan, "blk.11.ffn_down.weight"), "q4_K");
  EXPECT_EQ(type_of(plan, "token_embd.weight"), "q4_K");
  EXPECT_EQ(type_of(plan, "blk.0.attn_q.weight"), "q4_K");
  EXPECT_EQ(type_of(plan, "blk.0.attn_norm.weight"), "f32");
}

TEST_F(GgufModel32, Q5KMUsesQ6KOnTheSameLayersAndQ5KElsewhere) {
  const GgufModelPlan plan = plan_of(load(*dir_), "q5_k_m");
  const std::map<int, int> position = quantize_positions(32);
  for (int layer = 0; layer < 32; ++layer) {
    const std::string expected = spec_use_more_bits(position.at(layer), 32) ? "q6_K" : "q5_K";
    EXPECT_EQ(type_of(plan, "blk." + std::to_string(layer) + ".attn_v.weight"), expected) << layer;
    EXPECT_EQ(type_of(plan, "blk." + std::to_string(layer) + ".ffn_down.weight"), expected) << layer;
    EXPECT_EQ(type_of(plan, "blk." + std::to_string(layer) + ".ffn_up.weight"), "q5_K") << layer;
  }
  EXPECT_EQ(type_of(plan, "output.weight"), "q6_K");
  EXPECT_EQ(type_of(plan, "token_embd.weight"), "q5_K");
}

TEST_F(GgufModel32, Q4KSGivesQ5KToTheFirstAttnVAndFfnDownInLayerOrder) {
  const GgufModelPlan plan = plan_of(load(*dir_), "q4_k");
  EXPECT_EQ(plan.file_type, GgufFileType::kQ4_K_S);
  // The first 4 attn_v and the first 32 / 8 = 4 ffn_down llama-quantize
  // reaches: layers 0-3 (not the file's first four, layers 0, 1, 10, 11).
  const std::set<int> bumped = {0, 1, 2, 3};
  for (int layer = 0; layer < 32; ++layer) {
    const std::string expected = bumped.count(layer) ? "q5_K" : "q4_K";
    EXPECT_EQ(type_of(plan, "blk." + std::to_string(layer) + ".attn_v.weight"), expected) << layer;
    EXPECT_EQ(type_of(plan, "blk." + std::to_string(layer) + ".ffn_down.weight"), expected) << layer;
    EXPECT_EQ(type_of(plan, "blk." + std::to_string(layer) + ".attn_k.weight"), "q4_K") << layer;
  }
  EXPECT_EQ(type_of(plan, "output.weight"), "q6_K");
  EXPECT_EQ(type_of(plan, "token_embd.weight"), "q4_K");
}

TEST_F(GgufModel32, LegacyAndUniformFileTypes) {
  const Loaded model = load(*dir_);
  const GgufModelPlan q4_0 = plan_of(model, "q4_0");
  EXPECT_EQ(type_of(q4_0, "output.weight"), "q6_K");  // 256 columns: whole Q6_K super-blocks
  EXPECT_EQ(type_of(q4_0, "token_embd.weight"), "q4_0");
  EXPECT_EQ(type_of(q4_0, "blk.0.attn_v.weight"), "q4_0");
  EXPECT_EQ(type_of(q4_0, "blk.9.ffn_down.weight"), "q4_0");
  EXPECT_EQ(type_of(q4_0, "blk.0.ffn_norm.weight"), "f32");

  const GgufModelPlan q8_0 = plan_of(model, "q8_0");
  for (const auto& tensor : q8_0.tensors) {
    EXPECT_EQ(type_name(tensor.type), tensor.shape.size() == 1 ? "f32" : "q8_0") << tensor.name;
  }
  const GgufModelPlan q6_k = plan_of(model, "q6_k");
  for (const auto& tensor : q6_k.tensors) {
    EXPECT_EQ(type_name(tensor.type), tensor.shape.size() == 1 ? "f32" : "q6_K") << tensor.name;
  }
  const GgufModelPlan f16 = plan_of(model, "f16");
  for (const auto& tensor : f16.tensors) {
    EXPECT_EQ(type_name(tensor.type), tensor.shape.size() == 1 ? "f32" : "f16") << tensor.name;
  }
}

TEST_F(GgufModel32, LlamaQAndKArePermutedWithTheirHeadCounts) {
  const GgufModelPlan plan = plan_of(load(*dir_), "q4_k_m");
  for (const auto& tensor : plan.tensors) {
    int64_t expected = 0;
    if (tensor.name.ends_with("attn_q.weight")) expected = 4;
    if (tensor.name.ends_with("attn_k.weight")) expected = 2;
    EXPECT_EQ(tensor.permute_heads, expected) << tensor.name;
  }
}

class GgufModelDir : public ::testing::Test {
 protected:
  void TearDown() override { fs::remove_all(test_root()); }
};

TEST_F(GgufModelDir, TiedEmbeddingGetsTheOutputRule) {
  Shape shape;
  shape.n_layers = 2;
  json config = config_json("LlamaForCausalLM", shape);
  config["tie_word_embeddings"] = true;
  const Loaded model = load(make_model("tied", config, model_tensors(shape, /*lm_head=*/false, false, false)));
  const GgufModelPlan plan = plan_of(model, "q4_k_m");
  EXPECT_EQ(type_of(plan, "output.weight"), "");
  EXPECT_EQ(plan.find("lm_head.weight"), nullptr);
  EXPECT_EQ(type_of(plan, "token_embd.weight"), "q6_K");
  EXPECT_EQ(type_of(plan_of(model, "q4_0"), "token_embd.weight"), "q6_K");
  EXPECT_EQ(type_of(plan_of(model, "q8_0"), "token_embd.weight"), "q8_0");
  EXPECT_EQ(type_of(plan_of(model, "f16"), "token_embd.weight"), "f16");
}

TEST_F(GgufModelDir, RowsThatAreNotWholeSuperBlocks) {
  Shape shape;
  shape.hidden = 64;
  shape.intermediate = 128;
  shape.vocab = 64;
  shape.n_layers = 2;
  const Loaded model =
      load(make_model("narrow", config_json("LlamaForCausalLM", shape), model_tensors(shape, true, false, false)));
  // q6_k: every 2-D tensor falls back to Q8_0 (64 and 128 columns are not 256-value super-blocks).
  for (const auto& tensor : plan_of(model, "q6_k").tensors) {
    EXPECT_EQ(type_name(tensor.type), tensor.shape.size() == 1 ? "f32" : "q8_0") << tensor.name;
  }
  // q4_k_m: output.weight falls back to Q8_0, but the first Q4_K tensor would be Q5_0.
  try {
    plan_of(model, "q4_k_m");
    ADD_FAILURE() << "q4_k_m on 64-column rows was planned";
  } catch (const UnsupportedError& error) {
    EXPECT_NE(std::string(error.what()).find("token_embd.weight"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("Q5_0"), std::string::npos) << error.what();
  }
  EXPECT_THROW(plan_of(model, "q5_k"), UnsupportedError);
  // q4_0: 64-column rows are whole Q4_0 blocks; output.weight would be Q6_K and falls back to Q8_0.
  const GgufModelPlan q4_0 = plan_of(model, "q4_0");
  EXPECT_EQ(type_of(q4_0, "output.weight"), "q8_0");  // 64 % 256 != 0 for the Q6_K it would get
  EXPECT_EQ(type_of(q4_0, "blk.0.attn_q.weight"), "q4_0");
}

TEST_F(GgufModelDir, QwenFamiliesKeepHfRowOrder) {
  Shape shape;
  shape.n_layers = 2;
  json qwen2 = config_json("Qwen2ForCausalLM", shape);
  const GgufModelPlan plan2 = plan_of(load(make_model("qwen2", qwen2, model_tensors(shape, true, true, false))), "q4_k_m");
  EXPECT_EQ(plan2.architecture, "qwen2");
  EXPECT_EQ(type_of(plan2, "blk.1.attn_q.bias"), "f32");
  EXPECT_EQ(type_of(plan2, "blk.1.attn_k.bias"), "f32");
  EXPECT_EQ(type_of(plan2, "blk.1.attn_v.bias"), "f32");
  for (const auto& tensor : plan2.tensors) EXPECT_EQ(tensor.permute_heads, 0) << tensor.name;

  shape.head_dim = 128;  // Qwen3 gives head_dim explicitly (here wider than hidden / heads)
  json qwen3 = config_json("Qwen3ForCausalLM", shape);
  const GgufModelPlan plan3 = plan_of(load(make_model("qwen3", qwen3, model_tensors(shape, true, false, true))), "q4_k_m");
  EXPECT_EQ(plan3.architecture, "qwen3");
  EXPECT_EQ(type_of(plan3, "blk.0.attn_q_norm.weight"), "f32");
  EXPECT_EQ(type_of(plan3, "blk.0.attn_k_norm.weight"), "f32");
  ASSERT_NE(plan3.find("model.layers.0.self_attn.q_proj.weight"), nullptr);
  EXPECT_EQ(plan3.find("model.layers.0.self_attn.q_proj.weight")->shape, std::vector<int64_t>({512, 256}));
  for (const auto& tensor : plan3.tensors) EXPECT_EQ(tensor.permute_heads, 0) << tensor.name;
}

TEST_F(GgufModelDir, MistralIsLlamaAndPermuted) {
  Shape shape;
  shape.n_layers = 2;
  const GgufModelPlan plan = plan_of(
      load(make_model("mistral", config_json("MistralForCausalLM", shape), model_tensors(shape, true, false, false))),
      "q4_0");
  EXPECT_EQ(plan.architecture, "llama");
  EXPECT_EQ(plan.find("model.layers.1.self_attn.q_proj.weight")->permute_heads, 4);
  EXPECT_EQ(plan.find("model.layers.1.self_attn.k_proj.weight")->permute_heads, 2);
  EXPECT_EQ(plan.find("model.layers.1.self_attn.v_proj.weight")->permute_heads, 0);
}

TEST_F(GgufModelDir, Llama3RopeFactorsComeFirst) {
  Shape shape;
  shape.n_layers = 2;
  json config = config_json("LlamaForCausalLM", shape);
  config["rope_theta"] = 500000.0;
  config["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 8192}};
  const GgufModelPlan plan =
      plan_of(load(make_model("llama3", config, model_tensors(shape, true, false, false))), "q8_0");
  ASSERT_FALSE(plan.tensors.empty());
  EXPECT_EQ(plan.tensors[0].name, "rope_freqs.weight");
  EXPECT_EQ(plan.tensors[0].hf_name, "");
  EXPECT_EQ(plan.tensors[0].shape, std::vector<int64_t>({32}));
  EXPECT_EQ(plan.tensors[0].type, GgmlType::kF32);
  ASSERT_TRUE(plan.rope_freqs.defined());
  ASSERT_EQ(plan.rope_freqs.numel(), 32);
  // Highest frequency (wavelength 2 pi) unscaled; lowest (wavelength far past 8192) scaled by the factor.
  EXPECT_FLOAT_EQ(plan.rope_freqs[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(plan.rope_freqs[31].item<float>(), 8.0f);
}

TEST_F(GgufModelDir, UnsupportedArchitectureNamesConfigJson) {
  Shape shape;
  shape.hidden = 64;
  shape.intermediate = 160;
  shape.vocab = 320;
  shape.n_layers = 2;
  json gemma2 = config_json("Gemma2ForCausalLM", shape);
  gemma2["hidden_activation"] = "gelu_pytorch_tanh";
  gemma2["head_dim"] = 16;
  gemma2["query_pre_attn_scalar"] = 16;
  gemma2["attn_logit_softcapping"] = 50.0;
  gemma2["final_logit_softcapping"] = 30.0;
  gemma2["sliding_window"] = 16;
  const fs::path dir = make_model("gemma2", gemma2, model_tensors(shape, false, false, false));
  const Loaded model = load(dir);
  try {
    plan_of(model, "q8_0");
    ADD_FAILURE() << "Gemma2 was planned";
  } catch (const UnsupportedError& error) {
    EXPECT_NE(std::string(error.what()).find((dir / "config.json").string()), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("Gemma2ForCausalLM"), std::string::npos) << error.what();
  }
  EXPECT_THROW(gguf_architecture(model.config), UnsupportedError);
}

TEST_F(GgufModelDir, UnknownTensorIsUnsupportedAndInvFreqIsSkipped) {
  Shape shape;
  shape.n_layers = 2;
  const Loaded model =
      load(make_model("llama", config_json("LlamaForCausalLM", shape), model_tensors(shape, true, false, false)));
  std::vector<SourceTensor> sources = source_tensors(model.checkpoint);
  const size_t n_planned = plan_gguf_model(model.config, sources, GgufFileType::kQ8_0).tensors.size();
  EXPECT_EQ(n_planned, sources.size());
  sources.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {32}});
  EXPECT_EQ(plan_gguf_model(model.config, sources, GgufFileType::kQ8_0).tensors.size(), n_planned);
  sources.push_back({"model.layers.0.mlp.experts.0.up_proj.weight", {512, 256}});
  try {
    plan_gguf_model(model.config, sources, GgufFileType::kQ8_0);
    ADD_FAILURE() << "an unknown tensor was planned";
  } catch (const UnsupportedError& error) {
    EXPECT_NE(std::string(error.what()).find("model.layers.0.mlp.experts.0.up_proj.weight"), std::string::npos)
        << error.what();
  }
}

TEST(GgufFileType, ParsesNamesInAnyCase) {
  EXPECT_EQ(parse_gguf_file_type("q4_k_m"), GgufFileType::kQ4_K_M);
  EXPECT_EQ(parse_gguf_file_type("Q4_K_M"), GgufFileType::kQ4_K_M);
  EXPECT_EQ(parse_gguf_file_type("q4_k"), GgufFileType::kQ4_K_S);
  EXPECT_EQ(parse_gguf_file_type("Q4_K_S"), GgufFileType::kQ4_K_S);
  EXPECT_EQ(parse_gguf_file_type("q5_k"), GgufFileType::kQ5_K_S);
  EXPECT_EQ(parse_gguf_file_type("q5_k_m"), GgufFileType::kQ5_K_M);
  EXPECT_EQ(parse_gguf_file_type("q6_k"), GgufFileType::kQ6_K);
  EXPECT_EQ(parse_gguf_file_type("q8_0"), GgufFileType::kQ8_0);
  EXPECT_EQ(parse_gguf_file_type("q4_0"), GgufFileType::kQ4_0);
  EXPECT_EQ(parse_gguf_file_type("q4_1"), GgufFileType::kQ4_1);
  EXPECT_EQ(parse_gguf_file_type("BF16"), GgufFileType::kBF16);
  EXPECT_EQ(parse_gguf_file_type("f16"), GgufFileType::kF16);
  EXPECT_EQ(parse_gguf_file_type("f32"), GgufFileType::kF32);
  // llama.cpp's llama_ftype numbers, as general.file_type stores them.
  EXPECT_EQ(static_cast<uint32_t>(GgufFileType::kQ4_K_M), 15u);
  EXPECT_EQ(static_cast<uint32_t>(GgufFileType::kQ8_0), 7u);
  try {
    parse_gguf_file_type("q3_k_m");
    ADD_FAILURE() << "q3_k_m parsed";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("q3_k_m"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("q4_k_m"), std::string::npos);  // lists the known ones
  }
  for (const std::string name : {"q4_0", "q4_1", "q8_0", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m", "f16", "bf16"}) {
    EXPECT_EQ(parse_gguf_file_type(gguf_file_type_name(parse_gguf_file_type(name))), parse_gguf_file_type(name));
  }
}

// convert_hf_to_gguf's LlamaModel.permute written out in ATen.
at::Tensor converter_permute(const at::Tensor& w, int64_t n_head) {
  const int64_t rows = w.size(0);
  if (w.dim() == 1) return w.reshape({n_head, 2, rows / n_head / 2}).transpose(1, 2).reshape({rows});
  const int64_t cols = w.size(1);
  return w.reshape({n_head, 2, rows / n_head / 2, cols}).transpose(1, 2).reshape({rows, cols});
}

TEST(GgufRopePermutation, MatchesTheConvertersFormula) {
  at::manual_seed(7);
  for (const int64_t n_heads : {1, 2, 4, 8}) {
    const at::Tensor w = at::randn({n_heads * 16, 24});
    EXPECT_TRUE(at::equal(permute_rows_for_rope(w, n_heads), converter_permute(w, n_heads))) << n_heads;
    const at::Tensor bytes = at::randint(0, 256, {n_heads * 16, 34}, at::kByte);
    const at::Tensor permuted = permute_rows_for_rope(bytes, n_heads);
    EXPECT_EQ(permuted.scalar_type(), at::kByte);
    EXPECT_TRUE(at::equal(permuted, converter_permute(bytes, n_heads))) << n_heads;
    const at::Tensor bias = at::randn({n_heads * 16});
    EXPECT_TRUE(at::equal(permute_rows_for_rope(bias, n_heads), converter_permute(bias, n_heads))) << n_heads;
  }
  // Head 0 of 2 heads of 8 rows: rows 0..3 are the first halves, 4..7 the second; interleaved after.
  const at::Tensor rows = at::arange(16, at::kLong);
  EXPECT_TRUE(at::equal(permute_rows_for_rope(rows, 2),
                        at::tensor({0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15}, at::kLong)));
}

TEST(GgufRopePermutation, CommutesWithRowWiseEncoding) {
  at::manual_seed(8);
  const at::Tensor w = at::randn({64, 256});
  for (const GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ6_K}) {
    EXPECT_TRUE(at::equal(permute_rows_for_rope(quantize_rows(type, w, at::Tensor()), 4),
                          quantize_rows(type, converter_permute(w, 4), at::Tensor())))
        << type_name(type);
  }
}

TEST(GgufRopePermutation, RowsThatDoNotSplitIntoHeadPairsAreInputError) {
  EXPECT_THROW(permute_rows_for_rope(at::zeros({12, 4}), 4), InputError);
  EXPECT_THROW(permute_rows_for_rope(at::zeros({16, 4}), 0), InputError);
}

TEST(GgufScheme, TakesTheGgmlTypesGridBitsAndGroups) {
  solver::Scheme asked;
  asked.quant.bits = 3;
  asked.quant.group_size = 128;
  asked.quant.sym = false;
  asked.quant.mse = true;
  asked.damp_percent = 0.05;
  asked.desc_act = true;
  asked.static_groups = false;
  struct Expected {
    GgmlType type;
    const char* grid;
    int bits;
    int group;
    bool sym;
    bool static_groups;
  };
  const std::vector<Expected> cases = {
      {GgmlType::kQ4_0, "q4_0", 4, 32, true, false},  {GgmlType::kQ4_1, "q4_1", 4, 32, false, false},
      {GgmlType::kQ8_0, "q8_0", 8, 32, true, false},  {GgmlType::kQ4_K, "q4_K", 4, 32, false, true},
      {GgmlType::kQ5_K, "q5_K", 5, 32, false, true},  {GgmlType::kQ6_K, "q6_K", 6, 16, true, true}};
  for (const auto& expected : cases) {
    const solver::Scheme scheme = ggml_scheme(expected.type, asked);
    EXPECT_EQ(scheme.grid, expected.grid);
    EXPECT_EQ(scheme.quant.bits, expected.bits) << expected.grid;
    EXPECT_EQ(scheme.quant.group_size, expected.group) << expected.grid;
    EXPECT_EQ(scheme.quant.sym, expected.sym) << expected.grid;
    EXPECT_FALSE(scheme.quant.mse) << expected.grid;
    EXPECT_EQ(scheme.static_groups, expected.static_groups) << expected.grid;
    // The solver settings that were asked for stay.
    EXPECT_TRUE(scheme.desc_act) << expected.grid;
    EXPECT_DOUBLE_EQ(scheme.damp_percent, 0.05) << expected.grid;
    EXPECT_EQ(make_ggml_grid(expected.type)->bits(), expected.bits) << expected.grid;
  }
  asked.static_groups = true;
  EXPECT_TRUE(ggml_scheme(GgmlType::kQ4_0, asked).static_groups);
}

TEST(GgufScheme, FormatRefusesActOrderWithoutStaticGroupsOnLegacyBlocksOnly) {
  GgufModelPlan plan;
  plan.architecture = "llama";
  plan.file_type = GgufFileType::kQ4_0;
  plan.tensors = {{"model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight", {64, 256}, GgmlType::kQ4_0, 0},
                  {"model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight", {64, 256}, GgmlType::kQ4_K, 0},
                  {"model.layers.0.mlp.gate_proj.weight", "blk.0.ffn_gate.weight", {64, 256}, GgmlType::kF16, 0}};
  const auto format = make_gguf_format(plan);
  plan.tensors.clear();  // the format keeps its own copy
  EXPECT_EQ(format->name(), "gguf");
  EXPECT_FALSE(format->quantizes_lm_head());

  solver::Scheme asked;
  asked.desc_act = true;
  asked.static_groups = false;
  std::string why;
  try {
    format->module_scheme("model.layers.0.mlp.up_proj", {64, 256}, asked, &why);
    ADD_FAILURE() << "act-order without static groups on Q4_0 was accepted";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("model.layers.0.mlp.up_proj"), std::string::npos) << error.what();
  }
  asked.method = solver::SolveMethod::kRtn;  // no act-order for RTN: nothing to refuse
  EXPECT_TRUE(format->module_scheme("model.layers.0.mlp.up_proj", {64, 256}, asked, &why).has_value());
  asked.method = solver::SolveMethod::kGptq;
  asked.static_groups = true;
  const auto q4_0 = format->module_scheme("model.layers.0.mlp.up_proj", {64, 256}, asked, &why);
  ASSERT_TRUE(q4_0.has_value());
  EXPECT_EQ(q4_0->grid, "q4_0");
  EXPECT_EQ(format->grid(*q4_0)->bits(), q4_0->quant.bits);

  asked.static_groups = false;
  const auto q4_k = format->module_scheme("model.layers.0.mlp.down_proj", {64, 256}, asked, &why);
  ASSERT_TRUE(q4_k.has_value());
  EXPECT_EQ(q4_k->grid, "q4_K");
  EXPECT_TRUE(q4_k->static_groups);
  EXPECT_TRUE(q4_k->desc_act);
  const auto grid = format->grid(*q4_k);
  ASSERT_NE(grid, nullptr);
  EXPECT_EQ(grid->bits(), 4);
  EXPECT_EQ(format->grid(*q4_k), grid);  // one grid per type

  why.clear();
  EXPECT_FALSE(format->module_scheme("model.layers.0.mlp.gate_proj", {64, 256}, asked, &why).has_value());
  EXPECT_NE(why.find("blk.0.ffn_gate.weight"), std::string::npos) << why;

  // Storage: rows must be whole blocks of the scheme's type.
  EXPECT_FALSE(format->cannot_store(8, 256, *q4_k).has_value());
  EXPECT_TRUE(format->cannot_store(8, 64 + 32, *q4_k).has_value());
  EXPECT_FALSE(format->cannot_store(8, 96, *q4_0).has_value());
}

}  // namespace
}  // namespace gptq::gguf
