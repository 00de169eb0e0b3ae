#include "gptq/model/config.h"

#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "gptq/core/error.h"
#include "gptq/model/weights.h"

namespace gptq::model {
namespace {

nlohmann::json llama_json() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"hidden_size", 64},
          {"intermediate_size", 160},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"vocab_size", 320},
          {"rms_norm_eps", 1e-5},
          {"torch_dtype", "bfloat16"}};
}

ModelConfig parse(const nlohmann::json& json) { return parse_model_config(json.dump(), "/m/config.json"); }

std::vector<int64_t> windows(const ModelConfig& config) {
  std::vector<int64_t> per_layer;
  for (const auto& layer : config.layers) per_layer.push_back(layer.sliding_window);
  return per_layer;
}

template <typename ErrorType>
std::string error_of(const nlohmann::json& json) {
  try {
    parse(json);
  } catch (const ErrorType& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for " << json.dump();
  return "";
}

TEST(ModelConfig, LlamaDefaultsAndDerivedKeys) {
  ModelConfig config = parse(llama_json());
  EXPECT_EQ(config.architecture, "LlamaForCausalLM");
  EXPECT_EQ(config.head_dim, 16);
  EXPECT_EQ(config.n_kv_heads, 2);
  EXPECT_EQ(config.torch_dtype, c10::kBFloat16);
  EXPECT_FALSE(config.layer(0).qkv_bias);
  EXPECT_FALSE(config.tie_word_embeddings);
  EXPECT_FALSE(config.quantization_method.has_value());
  EXPECT_EQ(config.rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(config.rope.theta, 10000.0);
  EXPECT_EQ(windows(config), std::vector<int64_t>({0, 0}));
  EXPECT_EQ(config.layer_prefix(1), "model.layers.1.");
  ASSERT_EQ(config.layers.size(), 2u);
  EXPECT_EQ(config.n_linears(), 14);
  const LayerSpec& layer = config.layer(1);
  EXPECT_EQ(layer.index, 1);
  EXPECT_EQ(layer.intermediate_size, 160);
  ASSERT_EQ(layer.groups.size(), 4u);
  EXPECT_EQ(layer.groups[0],
            (LinearGroup{InputSite::kAttentionInput, {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}}));
  EXPECT_EQ(layer.groups[1], (LinearGroup{InputSite::kAttentionOutput, {"self_attn.o_proj"}}));
  EXPECT_EQ(layer.groups[2], (LinearGroup{InputSite::kMlpInput, {"mlp.gate_proj", "mlp.up_proj"}}));
  EXPECT_EQ(layer.groups[3], (LinearGroup{InputSite::kMlpHidden, {"mlp.down_proj"}}));
  EXPECT_EQ(layer.groups_at(InputSite::kMlpInput), std::vector<int>({2}));
  EXPECT_EQ(layer.input_norm.name, "input_layernorm");
  EXPECT_EQ(layer.mlp.down_proj, "mlp.down_proj");
}

TEST(ModelConfig, RecordsAnExistingQuantization) {
  auto json = llama_json();
  json["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
  EXPECT_EQ(parse(json).quantization_method, "fp8");
}

TEST(ModelConfig, MissingKeyNamesKeyAndFile) {
  auto json = llama_json();
  json.erase("hidden_size");
  std::string message = error_of<InputError>(json);
  EXPECT_NE(message.find("'hidden_size'"), std::string::npos) << message;
  EXPECT_NE(message.find("/m/config.json"), std::string::npos) << message;
}

TEST(ModelConfig, MistypedKeyIsInputError) {
  auto json = llama_json();
  json["num_hidden_layers"] = "two";
  EXPECT_NE(error_of<InputError>(json).find("'num_hidden_layers' must be an integer"), std::string::npos);
  json = llama_json();
  json["num_key_value_heads"] = 3;
  EXPECT_NE(error_of<InputError>(json).find("multiple of num_key_value_heads"), std::string::npos);
}

TEST(ModelConfig, UnsupportedArchitectureListsSupported) {
  auto json = llama_json();
  json["architectures"] = {"GPT2LMHeadModel"};
  std::string message = error_of<UnsupportedError>(json);
  EXPECT_NE(message.find("'GPT2LMHeadModel'"), std::string::npos) << message;
  EXPECT_NE(message.find("Qwen3ForCausalLM"), std::string::npos) << message;
  EXPECT_NE(message.find("/m/config.json"), std::string::npos) << message;
}

TEST(ModelConfig, UnsupportedActivationAndRope) {
  auto json = llama_json();
  json["hidden_act"] = "relu";
  EXPECT_NE(error_of<UnsupportedError>(json).find("hidden_act 'relu'"), std::string::npos);
  json = llama_json();
  json["rope_scaling"] = {{"type", "dynamic"}, {"factor", 4.0}};
  EXPECT_NE(error_of<UnsupportedError>(json).find("'dynamic'"), std::string::npos);
}

TEST(ModelConfig, Llama3RopeFromTransformers4AndTransformers5Keys) {
  nlohmann::json params = {{"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 8192}};
  auto v4 = llama_json();
  v4["rope_theta"] = 500000.0;
  v4["rope_scaling"] = params;
  v4["rope_scaling"]["rope_type"] = "llama3";
  auto v5 = llama_json();
  v5["rope_parameters"] = params;
  v5["rope_parameters"]["rope_type"] = "llama3";
  v5["rope_parameters"]["rope_theta"] = 500000.0;
  for (const auto& json : {v4, v5}) {
    ModelConfig config = parse(json);
    EXPECT_EQ(config.rope.type, RopeType::kLlama3);
    EXPECT_DOUBLE_EQ(config.rope.theta, 500000.0);
    EXPECT_DOUBLE_EQ(config.rope.factor, 8.0);
    EXPECT_EQ(config.rope.original_max_position_embeddings, 8192);
  }
  v5["rope_parameters"].erase("low_freq_factor");
  EXPECT_NE(error_of<InputError>(v5).find("'low_freq_factor'"), std::string::npos);
}

TEST(ModelConfig, FamiliesResolveBiasNormAndWindowsFromTheTable) {
  auto qwen2 = llama_json();
  qwen2["architectures"] = {"Qwen2ForCausalLM"};
  qwen2["use_sliding_window"] = true;
  qwen2["sliding_window"] = 32;
  qwen2["max_window_layers"] = 1;
  ModelConfig config = parse(qwen2);
  EXPECT_TRUE(config.layer(0).qkv_bias && config.layer(1).qkv_bias);
  EXPECT_FALSE(config.layer(0).o_bias);
  EXPECT_TRUE(config.layer(1).has_bias("self_attn.k_proj"));
  EXPECT_FALSE(config.layer(1).has_bias("self_attn.o_proj"));
  EXPECT_EQ(windows(config), std::vector<int64_t>({0, 32}));

  auto qwen3 = llama_json();
  qwen3["architectures"] = {"Qwen3ForCausalLM"};
  qwen3["head_dim"] = 32;
  qwen3["sliding_window"] = 32;  // ignored: use_sliding_window is false
  config = parse(qwen3);
  EXPECT_TRUE(config.arch.attention.qk_norm == QkNorm::kPerHead && config.layer(1).attention.qk_norm == QkNorm::kPerHead);
  EXPECT_EQ(config.head_dim, 32);
  EXPECT_EQ(windows(config), std::vector<int64_t>({0, 0}));

  auto mistral = llama_json();
  mistral["architectures"] = {"MistralForCausalLM"};
  mistral["sliding_window"] = 16;
  mistral["attention_bias"] = true;  // Mistral has no biases whatever the key says
  config = parse(mistral);
  EXPECT_EQ(windows(config), std::vector<int64_t>({16, 16}));
  EXPECT_FALSE(config.layer(0).qkv_bias);

  auto llama = llama_json();
  llama["attention_bias"] = true;
  llama["mlp_bias"] = true;
  llama["tie_word_embeddings"] = true;
  llama["dtype"] = "float16";
  config = parse(llama);
  EXPECT_TRUE(config.layer(1).qkv_bias && config.layer(1).o_bias && config.layer(1).mlp_bias &&
              config.tie_word_embeddings);
  EXPECT_EQ(config.torch_dtype, c10::kHalf);
}

TEST(ModelConfig, Phi3KeepsItsFusedLinearsAndRotatesPartOfEachHead) {
  auto phi3 = llama_json();
  phi3["architectures"] = {"Phi3ForCausalLM"};
  phi3["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}, {"partial_rotary_factor", 0.5}};
  phi3["sliding_window"] = 16;
  ModelConfig config = parse(phi3);
  const LayerSpec& layer = config.layer(1);
  ASSERT_EQ(layer.groups.size(), 4u);
  EXPECT_EQ(layer.groups[0].linears, std::vector<std::string>({"self_attn.qkv_proj"}));
  EXPECT_EQ(layer.groups[2].linears, std::vector<std::string>({"mlp.gate_up_proj"}));
  EXPECT_EQ(layer.groups[3].linears, std::vector<std::string>({"mlp.down_proj"}));
  EXPECT_EQ(config.rotary_dim, 8);  // head_dim 16 x 0.5
  EXPECT_EQ(windows(config), std::vector<int64_t>({16, 16}));

  phi3["rope_parameters"]["partial_rotary_factor"] = 0.3125;  // 5 dims: no rotate_half pairs
  EXPECT_NE(error_of<InputError>(phi3).find("even number of dims"), std::string::npos);
}

TEST(ModelConfig, GemmaNormsSoftCapsScalesAndPerLayerRope) {
  auto gemma2 = llama_json();
  gemma2["architectures"] = {"Gemma2ForCausalLM"};
  gemma2["hidden_activation"] = "gelu_pytorch_tanh";
  gemma2["head_dim"] = 24;
  gemma2["query_pre_attn_scalar"] = 24;
  gemma2["attn_logit_softcapping"] = 50.0;
  gemma2["final_logit_softcapping"] = 30.0;
  gemma2["sliding_window"] = 16;  // no layer_types: every second layer is full
  ModelConfig config = parse(gemma2);
  EXPECT_TRUE(config.tie_word_embeddings);  // Gemma's default
  EXPECT_TRUE(config.arch.scale_embeddings);
  EXPECT_DOUBLE_EQ(config.final_logit_softcap, 30.0);
  EXPECT_EQ(windows(config), std::vector<int64_t>({16, 0}));
  const LayerSpec& layer = config.layer(0);
  EXPECT_EQ(layer.mlp.activation, Activation::kGeluTanh);
  EXPECT_DOUBLE_EQ(layer.attention_softcap, 50.0);
  EXPECT_DOUBLE_EQ(layer.attention_scale, std::pow(24.0, -0.5));
  EXPECT_EQ(layer.input_norm.kind, NormKind::kRmsNormPlusOne);
  EXPECT_EQ(layer.post_attention_norm.name, "pre_feedforward_layernorm");
  EXPECT_EQ(layer.attention_output_norm.name, "post_attention_layernorm");
  EXPECT_EQ(layer.mlp_output_norm.name, "post_feedforward_layernorm");
  EXPECT_FALSE(config.sliding_rope.has_value());

  gemma2["attn_logit_softcapping"] = nullptr;
  gemma2["final_logit_softcapping"] = nullptr;
  config = parse(gemma2);
  EXPECT_EQ(config.layer(0).attention_softcap, 0.0);
  EXPECT_EQ(config.final_logit_softcap, 0.0);
  gemma2["use_bidirectional_attention"] = true;
  EXPECT_NE(error_of<UnsupportedError>(gemma2).find("use_bidirectional_attention"), std::string::npos);

  auto gemma3 = llama_json();
  gemma3["architectures"] = {"Gemma3ForCausalLM"};
  gemma3["hidden_activation"] = "gelu_pytorch_tanh";
  gemma3["num_hidden_layers"] = 3;
  gemma3["sliding_window"] = 16;
  gemma3["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention"};
  gemma3["rope_parameters"] = {
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}},
      {"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1000000.0}}}};
  config = parse(gemma3);
  EXPECT_EQ(config.layer(0).attention.qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(config.layer(0).attention.q_norm.kind, NormKind::kRmsNormPlusOne);
  EXPECT_EQ(windows(config), std::vector<int64_t>({16, 0, 16}));
  EXPECT_EQ(config.layer(0).rope_table, 1);
  EXPECT_EQ(config.layer(1).rope_table, 0);
  EXPECT_EQ(config.rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(config.rope.theta, 1000000.0);
  ASSERT_TRUE(config.sliding_rope.has_value());
  EXPECT_EQ(config.sliding_rope->type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(config.sliding_rope->theta, 10000.0);

  // transformers 4 keys: rope_theta for the full layers, rope_local_base_freq for the sliding ones.
  gemma3.erase("rope_parameters");
  gemma3["rope_theta"] = 1000000.0;
  gemma3["rope_local_base_freq"] = 20000.0;
  config = parse(gemma3);
  EXPECT_DOUBLE_EQ(config.rope.theta, 1000000.0);
  EXPECT_DOUBLE_EQ(config.sliding_rope->theta, 20000.0);
}

TEST(ModelConfig, MoeFamiliesResolveExpertsSharedExpertAndSparseLayers) {
  nlohmann::json qwen = llama_json();
  qwen["architectures"] = {"Qwen2MoeForCausalLM"};
  qwen["num_hidden_layers"] = 4;
  qwen["num_experts"] = 8;
  qwen["num_experts_per_tok"] = 2;
  qwen["moe_intermediate_size"] = 48;
  qwen["shared_expert_intermediate_size"] = 80;
  qwen["decoder_sparse_step"] = 2;
  qwen["mlp_only_layers"] = {3};
  qwen["norm_topk_prob"] = true;
  qwen["sliding_window"] = 0;  // as Qwen2-MoE writes it without use_sliding_window
  const ModelConfig config = parse(qwen);
  EXPECT_FALSE(config.layer(0).is_moe());  // (0 + 1) % 2 != 0
  EXPECT_TRUE(config.layer(1).is_moe());
  EXPECT_FALSE(config.layer(2).is_moe());
  EXPECT_FALSE(config.layer(3).is_moe());  // mlp_only_layers
  const LayerSpec& sparse = config.layer(1);
  EXPECT_EQ(sparse.n_experts, 8);
  EXPECT_EQ(sparse.top_k, 2);
  EXPECT_TRUE(sparse.renormalize_top_k);
  EXPECT_EQ(sparse.expert_intermediate_size, 48);
  EXPECT_EQ(sparse.shared_intermediate_size, 80);
  ASSERT_EQ(sparse.groups.size(), 2u + 2 * 9);
  EXPECT_EQ(sparse.groups[2], (LinearGroup{InputSite::kMlpInput,
                                           {"mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj"}}));
  EXPECT_EQ(sparse.groups[3], (LinearGroup{InputSite::kMlpInput,
                                           {"mlp.experts.0.gate_proj", "mlp.experts.0.up_proj"}, 0}));
  EXPECT_EQ(sparse.groups[11], (LinearGroup{InputSite::kMlpHidden, {"mlp.shared_expert.down_proj"}}));
  EXPECT_EQ(sparse.groups[19], (LinearGroup{InputSite::kMlpHidden, {"mlp.experts.7.down_proj"}, 7}));
  EXPECT_EQ(config.layer(0).groups.size(), 4u);
  EXPECT_EQ(windows(config), std::vector<int64_t>(4, 0));
  EXPECT_EQ(config.n_linears(), 3 * 7 + (4 + 3 + 3 * 8));

  nlohmann::json mixtral = llama_json();
  mixtral["architectures"] = {"MixtralForCausalLM"};
  mixtral["num_local_experts"] = 4;
  mixtral["num_experts_per_tok"] = 2;
  const ModelConfig m = parse(mixtral);
  EXPECT_TRUE(m.layer(0).is_moe() && m.layer(1).is_moe());
  EXPECT_TRUE(m.layer(0).renormalize_top_k);  // always, whatever norm_topk_prob says
  EXPECT_EQ(m.layer(0).expert_intermediate_size, 160);
  EXPECT_EQ(m.layer(0).shared_intermediate_size, 0);
  EXPECT_EQ(m.layer(0).groups[2].linears,
            (std::vector<std::string>{"block_sparse_moe.experts.0.w1", "block_sparse_moe.experts.0.w3"}));
  EXPECT_EQ(m.layer(0).groups.back().linears, std::vector<std::string>{"block_sparse_moe.experts.3.w2"});

  mixtral["num_experts_per_tok"] = 5;
  EXPECT_THROW(parse(mixtral), InputError);
  mixtral["num_experts_per_tok"] = 2;
  mixtral.erase("num_local_experts");
  try {
    parse(mixtral);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("num_experts"), std::string::npos) << e.what();
  }

  nlohmann::json olmoe = llama_json();
  olmoe["architectures"] = {"OlmoeForCausalLM"};
  olmoe["num_experts"] = 4;
  olmoe["num_experts_per_tok"] = 2;
  olmoe["clip_qkv"] = 8.0;
  const ModelConfig o = parse(olmoe);
  EXPECT_EQ(o.layer(0).attention.qk_norm, QkNorm::kWholeProjection);
  EXPECT_DOUBLE_EQ(o.layer(1).clip_qkv, 8.0);
  EXPECT_FALSE(o.layer(0).renormalize_top_k);
}

nlohmann::json deepseek_json() {
  nlohmann::json ds = llama_json();
  ds["architectures"] = {"DeepseekV3ForCausalLM"};
  ds["num_hidden_layers"] = 3;
  ds["num_key_value_heads"] = 4;
  ds["n_routed_experts"] = 12;
  ds["n_shared_experts"] = 2;
  ds["num_experts_per_tok"] = 3;
  ds["moe_intermediate_size"] = 48;
  ds["n_group"] = 4;
  ds["topk_group"] = 2;
  ds["first_k_dense_replace"] = 1;
  ds["routed_scaling_factor"] = 2.5;
  ds["q_lora_rank"] = 40;
  ds["kv_lora_rank"] = 28;
  ds["qk_nope_head_dim"] = 12;
  ds["qk_rope_head_dim"] = 8;
  ds["v_head_dim"] = 18;
  return ds;
}

TEST(ModelConfig, DeepseekV3LatentAttentionGroupsAndGroupLimitedRouter) {
  nlohmann::json ds = deepseek_json();
  const ModelConfig config = parse(ds);
  EXPECT_EQ(config.head_dim, 8);  // the rotated part only, as transformers sets it
  EXPECT_EQ(config.rotary_dim, 8);
  EXPECT_FALSE(config.layer(0).is_moe());  // first_k_dense_replace
  EXPECT_TRUE(config.layer(1).is_moe() && config.layer(2).is_moe());
  const LayerSpec& dense = config.layer(0);
  EXPECT_EQ(dense.attention.kind, AttentionKind::kMla);
  EXPECT_TRUE(dense.mla.rope_interleave);  // transformers' default
  EXPECT_DOUBLE_EQ(dense.attention_scale, std::pow(20.0, -0.5));
  ASSERT_EQ(dense.groups.size(), 6u);
  EXPECT_EQ(dense.groups[0], (LinearGroup{InputSite::kAttentionInput,
                                          {"self_attn.q_a_proj", "self_attn.kv_a_proj_with_mqa"}}));
  EXPECT_EQ(dense.groups[1], (LinearGroup{InputSite::kQueryLatent, {"self_attn.q_b_proj"}}));
  EXPECT_EQ(dense.groups[2], (LinearGroup{InputSite::kKvLatent, {"self_attn.kv_b_proj"}}));
  EXPECT_EQ(dense.groups[3], (LinearGroup{InputSite::kAttentionOutput, {"self_attn.o_proj"}}));
  EXPECT_EQ(dense.groups[4], (LinearGroup{InputSite::kMlpInput, {"mlp.gate_proj", "mlp.up_proj"}}));
  EXPECT_EQ(linear_shape(config, 0, "self_attn.q_b_proj"), (std::vector<int64_t>{4 * 20, 40}));
  EXPECT_EQ(linear_shape(config, 0, "self_attn.kv_a_proj_with_mqa"), (std::vector<int64_t>{28 + 8, 64}));
  EXPECT_EQ(linear_shape(config, 0, "self_attn.kv_b_proj"), (std::vector<int64_t>{4 * (12 + 18), 28}));
  EXPECT_EQ(linear_shape(config, 0, "self_attn.o_proj"), (std::vector<int64_t>{64, 4 * 18}));
  EXPECT_EQ(linear_shape(config, 0, "mlp.gate_proj"), (std::vector<int64_t>{160, 64}));

  const LayerSpec& sparse = config.layer(1);
  EXPECT_EQ(sparse.moe.router_kind, RouterKind::kSigmoidGroupLimited);
  EXPECT_EQ(sparse.n_experts, 12);
  EXPECT_EQ(sparse.n_group, 4);
  EXPECT_EQ(sparse.topk_group, 2);
  EXPECT_DOUBLE_EQ(sparse.routed_scaling_factor, 2.5);
  EXPECT_TRUE(sparse.renormalize_top_k);  // DeepSeek's default
  EXPECT_EQ(sparse.shared_intermediate_size, 2 * 48);
  EXPECT_EQ(linear_shape(config, 1, "mlp.shared_experts.down_proj"), (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(sparse.groups[4], (LinearGroup{InputSite::kMlpInput,
                                           {"mlp.shared_experts.gate_proj", "mlp.shared_experts.up_proj"}}));
  EXPECT_EQ(sparse.groups.size(), 4u + 2 + 2 * 12);
  EXPECT_EQ(config.n_linears(), 5 + 3 + 2 * (5 + 3 + 3 * 12));
  EXPECT_FALSE(sparse.has_bias("self_attn.q_a_proj"));

  // q_lora_rank null: a plain q_proj in the first group, no q_b_proj group;
  // attention_bias reaches the latent projections and o_proj only.
  ds["q_lora_rank"] = nullptr;
  ds["rope_interleave"] = false;
  ds["attention_bias"] = true;
  const ModelConfig plain = parse(ds);
  const LayerSpec& layer = plain.layer(0);
  EXPECT_FALSE(layer.mla.rope_interleave);
  ASSERT_EQ(layer.groups.size(), 5u);
  EXPECT_EQ(layer.groups[0].linears, (std::vector<std::string>{"self_attn.q_proj", "self_attn.kv_a_proj_with_mqa"}));
  EXPECT_EQ(layer.groups[1], (LinearGroup{InputSite::kKvLatent, {"self_attn.kv_b_proj"}}));
  EXPECT_EQ(linear_shape(plain, 0, "self_attn.q_proj"), (std::vector<int64_t>{4 * 20, 64}));
  EXPECT_FALSE(layer.has_bias("self_attn.q_proj"));
  EXPECT_TRUE(layer.has_bias("self_attn.kv_a_proj_with_mqa"));
  EXPECT_FALSE(layer.has_bias("self_attn.kv_b_proj"));
  EXPECT_TRUE(layer.has_bias("self_attn.o_proj"));
}

TEST(ModelConfig, DeepseekV3ScaleRopeAndGroupChecks) {
  // A scaled RoPE with mscale_all_dim: scale * mscale^2 (transformers' yarn_apply_mscale).
  nlohmann::json ds = deepseek_json();
  ds["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 10000.0}, {"mscale_all_dim", 0.7}};
  const double mscale = 0.1 * 0.7 * std::log(4.0) + 1.0;
  EXPECT_DOUBLE_EQ(parse(ds).layer(0).attention_scale, std::pow(20.0, -0.5) * mscale * mscale);

  // DeepSeek-V3's own YaRN: mscale == mscale_all_dim, so cos/sin are unscaled
  // and the scores get mscale^2; original context from the block.
  ds["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 40.0}, {"rope_theta", 10000.0}, {"beta_fast", 32},
                           {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0},
                           {"original_max_position_embeddings", 4096}};
  const ModelConfig yarn = parse(ds);
  EXPECT_EQ(yarn.rope.type, RopeType::kYarn);
  EXPECT_EQ(yarn.rope.original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(yarn.rope.attention_factor, 1.0);
  const double yarn_mscale = 0.1 * std::log(40.0) + 1.0;
  EXPECT_DOUBLE_EQ(yarn.layer(0).attention_scale, std::pow(20.0, -0.5) * yarn_mscale * yarn_mscale);
  // Without mscale: cos/sin scaled by 0.1 ln(factor) + 1.
  ds["rope_parameters"].erase("mscale");
  EXPECT_DOUBLE_EQ(parse(ds).rope.attention_factor, yarn_mscale);

  // An unsupported RoPE type is refused, naming the file and the key.
  ds["rope_parameters"] = {{"rope_type", "longrope"}, {"factor", 4.0}, {"rope_theta", 10000.0}};
  const std::string refused = error_of<UnsupportedError>(ds);
  EXPECT_NE(refused.find("/m/config.json"), std::string::npos) << refused;
  EXPECT_NE(refused.find("rope_parameters.rope_type 'longrope'"), std::string::npos) << refused;

  ds = deepseek_json();
  ds["n_group"] = 5;  // 12 experts do not split into 5 groups
  EXPECT_NE(error_of<InputError>(ds).find("n_group"), std::string::npos);
  ds["n_group"] = 4;
  ds["topk_group"] = 5;
  EXPECT_NE(error_of<InputError>(ds).find("topk_group"), std::string::npos);
  ds["topk_group"] = 1;
  ds["num_experts_per_tok"] = 4;  // one group of 3 experts cannot give 4
  EXPECT_NE(error_of<InputError>(ds).find("num_experts_per_tok"), std::string::npos);
  // Keys whose transformers default is the full-size model's must be written.
  for (const char* key : {"q_lora_rank", "n_group", "topk_group", "routed_scaling_factor", "n_shared_experts",
                          "first_k_dense_replace"}) {
    ds = deepseek_json();
    ds.erase(key);
    EXPECT_NE(error_of<InputError>(ds).find(std::string("'") + key + "'"), std::string::npos) << key;
  }
  ds = deepseek_json();
  ds["num_key_value_heads"] = 2;
  EXPECT_NE(error_of<UnsupportedError>(ds).find("num_key_value_heads"), std::string::npos);
}

TEST(ModelConfig, BadJsonAndMissingFile) {
  EXPECT_THROW(parse_model_config("{not json", "x.json"), InputError);
  try {
    load_model_config("/nonexistent/model");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model/config.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace gptq::model
