// The table of supported families, one function per family, and the
// LayerSpec helpers. Adding a family built from existing parts is one
// function and one entry in build_table().
#include "gptq/model/arch.h"

#include "gptq/core/error.h"

namespace gptq::model {
namespace {

ArchSpec make_spec(std::string architecture) {
  ArchSpec spec;
  spec.architecture = std::move(architecture);
  return spec;
}

using BiasKind = BiasRule::Kind;

ArchSpec llama() {
  ArchSpec llama = make_spec("LlamaForCausalLM");
  llama.attention.qkv_bias = {BiasKind::kConfigKey, "attention_bias", false};
  llama.attention.o_bias = {BiasKind::kConfigKey, "attention_bias", false};
  llama.mlp.bias = {BiasKind::kConfigKey, "mlp_bias", false};
  return llama;
}

ArchSpec mistral() {
  ArchSpec mistral = make_spec("MistralForCausalLM");
  mistral.sliding_window = SlidingWindowRule::kAllLayers;
  return mistral;
}

ArchSpec qwen2() {
  ArchSpec qwen2 = make_spec("Qwen2ForCausalLM");
  qwen2.attention.qkv_bias = {BiasKind::kAlways, "", true};
  qwen2.sliding_window = SlidingWindowRule::kLayerTypes;
  return qwen2;
}

ArchSpec qwen3() {
  ArchSpec qwen3 = make_spec("Qwen3ForCausalLM");
  qwen3.attention.qkv_bias = {BiasKind::kConfigKey, "attention_bias", false};
  qwen3.attention.o_bias = {BiasKind::kConfigKey, "attention_bias", false};
  qwen3.attention.qk_norm = QkNorm::kPerHead;
  qwen3.sliding_window = SlidingWindowRule::kLayerTypes;
  return qwen3;
}

// Phi-3: fused qkv_proj and gate_up_proj, quantized as the fused linears the
// checkpoint holds (the names vLLM and GPTQModel expect).
ArchSpec phi3() {
  ArchSpec phi3 = make_spec("Phi3ForCausalLM");
  phi3.attention.qkv_proj = "self_attn.qkv_proj";
  phi3.mlp.gate_up_proj = "mlp.gate_up_proj";
  phi3.sliding_window = SlidingWindowRule::kAllLayers;
  return phi3;
}

// Gemma-2: (1 + w) RMSNorm everywhere, sandwich norms, GeGLU-tanh, scores
// scaled by query_pre_attn_scalar and soft-capped, alternating sliding
// layers, embedding scaled by sqrt(hidden), soft-capped logits, tied head.
ArchSpec gemma2() {
  ArchSpec gemma2 = make_spec("Gemma2ForCausalLM");
  gemma2.input_norm.kind = NormKind::kRmsNormPlusOne;
  gemma2.post_attention_norm = {NormKind::kRmsNormPlusOne, "pre_feedforward_layernorm"};
  gemma2.attention_output_norm = {NormKind::kRmsNormPlusOne, "post_attention_layernorm"};
  gemma2.mlp_output_norm = {NormKind::kRmsNormPlusOne, "post_feedforward_layernorm"};
  gemma2.final_norm_kind = NormKind::kRmsNormPlusOne;
  gemma2.attention.qkv_bias = {BiasKind::kConfigKey, "attention_bias", false};
  gemma2.attention.o_bias = {BiasKind::kConfigKey, "attention_bias", false};
  gemma2.attention.query_scale_key = "query_pre_attn_scalar";
  gemma2.attention.softcap_key = "attn_logit_softcapping";
  gemma2.sliding_window = SlidingWindowRule::kLayerTypes;
  gemma2.sliding_pattern = 2;
  gemma2.activation_key = "hidden_activation";
  gemma2.scale_embeddings = true;
  gemma2.final_softcap_key = "final_logit_softcapping";
  gemma2.tie_word_embeddings_default = true;
  return gemma2;
}

// Gemma-3 (text): Gemma-2 plus (1 + w) q/k norms per head and its own RoPE
// for the sliding layers (5 of every 6).
ArchSpec gemma3() {
  ArchSpec gemma3 = gemma2();
  gemma3.architecture = "Gemma3ForCausalLM";
  gemma3.attention.qk_norm = QkNorm::kPerHead;
  gemma3.attention.q_norm.kind = NormKind::kRmsNormPlusOne;
  gemma3.attention.k_norm.kind = NormKind::kRmsNormPlusOne;
  gemma3.sliding_pattern = 6;
  gemma3.rope_per_layer_type = true;
  return gemma3;
}

// MoE families: the dense parts as above, plus the sparse MLP.
ArchSpec mixtral() {
  ArchSpec mixtral = make_spec("MixtralForCausalLM");
  mixtral.sliding_window = SlidingWindowRule::kAllLayers;
  mixtral.has_moe = true;
  mixtral.moe.router = "block_sparse_moe.gate";
  mixtral.moe.experts = "block_sparse_moe.experts.";
  mixtral.moe.gate = "w1";
  mixtral.moe.up = "w3";
  mixtral.moe.down = "w2";
  mixtral.moe.always_renormalize = true;
  mixtral.moe.fp32_routing_weights = true;
  return mixtral;
}

ArchSpec qwen2_moe() {
  ArchSpec qwen2_moe = qwen2();
  qwen2_moe.architecture = "Qwen2MoeForCausalLM";
  qwen2_moe.attention.qkv_bias = {BiasKind::kConfigKey, "qkv_bias", true};
  qwen2_moe.has_moe = true;
  qwen2_moe.moe.layers = MoeLayerRule::kSparseStep;
  qwen2_moe.moe.intermediate_key = "moe_intermediate_size";
  qwen2_moe.moe.shared_expert = true;
  return qwen2_moe;
}

ArchSpec qwen3_moe() {
  ArchSpec qwen3_moe = qwen3();
  qwen3_moe.architecture = "Qwen3MoeForCausalLM";
  qwen3_moe.has_moe = true;
  qwen3_moe.moe.layers = MoeLayerRule::kSparseStep;
  qwen3_moe.moe.intermediate_key = "moe_intermediate_size";
  return qwen3_moe;
}

ArchSpec olmoe() {
  ArchSpec olmoe = make_spec("OlmoeForCausalLM");
  olmoe.attention.qkv_bias = {BiasKind::kConfigKey, "attention_bias", false};
  olmoe.attention.o_bias = {BiasKind::kConfigKey, "attention_bias", false};
  olmoe.attention.qk_norm = QkNorm::kWholeProjection;
  olmoe.attention.clip_qkv = true;
  olmoe.has_moe = true;
  return olmoe;
}

// DeepSeek-V3: multi-head latent attention, dense first layers, ungated
// shared experts, sigmoid group-limited routing with a score-correction bias.
ArchSpec deepseek_v3() {
  ArchSpec deepseek_v3 = make_spec("DeepseekV3ForCausalLM");
  deepseek_v3.attention.kind = AttentionKind::kMla;
  deepseek_v3.attention.qkv_bias = {BiasKind::kConfigKey, "attention_bias", false};
  deepseek_v3.attention.o_bias = {BiasKind::kConfigKey, "attention_bias", false};
  deepseek_v3.has_moe = true;
  deepseek_v3.moe.layers = MoeLayerRule::kFirstKDense;
  deepseek_v3.moe.router_kind = RouterKind::kSigmoidGroupLimited;
  deepseek_v3.moe.fp32_routing_weights = true;
  deepseek_v3.moe.renormalize_default = true;
  deepseek_v3.moe.intermediate_key = "moe_intermediate_size";
  deepseek_v3.moe.shared_expert = true;
  deepseek_v3.moe.shared_count_key = "n_shared_experts";
  deepseek_v3.moe.shared_prefix = "mlp.shared_experts.";
  deepseek_v3.moe.shared_gate = "";
  return deepseek_v3;
}

// Table order is the order supported_architectures() lists them in.
std::vector<ArchSpec> build_table() {
  return {llama(), mistral(), qwen2(),     qwen3(),     phi3(),  gemma2(),
          gemma3(), mixtral(), qwen2_moe(), qwen3_moe(), olmoe(), deepseek_v3()};
}

const std::vector<ArchSpec>& table() {
  static const std::vector<ArchSpec> kTable = build_table();
  return kTable;
}

}  // namespace

const char* input_site_name(InputSite site) {
  switch (site) {
    case InputSite::kAttentionInput: return "attention input";
    case InputSite::kQueryLatent: return "query latent";
    case InputSite::kKvLatent: return "kv latent";
    case InputSite::kAttentionOutput: return "attention output";
    case InputSite::kMlpInput: return "mlp input";
    case InputSite::kMlpHidden: return "mlp hidden";
  }
  return "?";
}

std::vector<LinearGroup> layer_groups(const LayerSpec& layer) {
  std::vector<LinearGroup> groups;
  const AttentionSpec& attention = layer.attention;
  switch (attention.kind) {
    case AttentionKind::kRopeCausalGqa:
      if (!attention.qkv_proj.empty()) {
        groups.push_back({InputSite::kAttentionInput, {attention.qkv_proj}});
      } else {
        groups.push_back({InputSite::kAttentionInput, {attention.q_proj, attention.k_proj, attention.v_proj}});
      }
      groups.push_back({InputSite::kAttentionOutput, {attention.o_proj}});
      break;
    case AttentionKind::kMla: {
      const MlaSpec& mla = attention.mla;
      const bool q_latent = layer.mla.q_lora_rank > 0;
      groups.push_back({InputSite::kAttentionInput, {q_latent ? mla.q_a_proj : attention.q_proj, mla.kv_a_proj}});
      if (q_latent) groups.push_back({InputSite::kQueryLatent, {mla.q_b_proj}});
      groups.push_back({InputSite::kKvLatent, {mla.kv_b_proj}});
      groups.push_back({InputSite::kAttentionOutput, {attention.o_proj}});
      break;
    }
  }
  const MlpSpec& mlp = layer.mlp;
  switch (mlp.kind) {
    case MlpKind::kDenseGated:
      if (!mlp.gate_up_proj.empty()) {
        groups.push_back({InputSite::kMlpInput, {mlp.gate_up_proj}});
      } else {
        groups.push_back({InputSite::kMlpInput, {mlp.gate_proj, mlp.up_proj}});
      }
      groups.push_back({InputSite::kMlpHidden, {mlp.down_proj}});
      break;
    case MlpKind::kSparseMoe: {
      const bool shared = layer.shared_intermediate_size > 0;
      if (shared) {
        groups.push_back({InputSite::kMlpInput, {layer.shared_linear(layer.moe.gate), layer.shared_linear(layer.moe.up)}});
      }
      for (int expert = 0; expert < layer.n_experts; ++expert) {
        groups.push_back({InputSite::kMlpInput,
                          {layer.expert_linear(expert, layer.moe.gate), layer.expert_linear(expert, layer.moe.up)},
                          expert});
      }
      if (shared) groups.push_back({InputSite::kMlpHidden, {layer.shared_linear(layer.moe.down)}});
      for (int expert = 0; expert < layer.n_experts; ++expert) {
        groups.push_back({InputSite::kMlpHidden, {layer.expert_linear(expert, layer.moe.down)}, expert});
      }
      break;
    }
  }
  return groups;
}

std::string LayerSpec::expert_linear(int expert, const std::string& which) const {
  return moe.experts + std::to_string(expert) + "." + which;
}

std::string LayerSpec::shared_linear(const std::string& which) const { return moe.shared_prefix + which; }

std::vector<std::string> LayerSpec::linear_names() const {
  std::vector<std::string> names;
  for (const auto& group : groups) names.insert(names.end(), group.linears.begin(), group.linears.end());
  return names;
}

std::vector<int> LayerSpec::groups_at(InputSite site) const {
  std::vector<int> found;
  for (size_t group_idx = 0; group_idx < groups.size(); ++group_idx) {
    if (groups[group_idx].site == site) found.push_back(static_cast<int>(group_idx));
  }
  return found;
}

bool LayerSpec::has_bias(const std::string& linear) const {
  if (linear == attention.o_proj) return o_bias;
  if (attention.kind == AttentionKind::kMla) {
    // attention_bias reaches the two latent projections only, never q_proj, q_b_proj or kv_b_proj.
    const MlaSpec& mla = attention.mla;
    if (linear == mla.q_a_proj || linear == mla.kv_a_proj) return qkv_bias;
    if (linear == attention.q_proj || linear == mla.q_b_proj || linear == mla.kv_b_proj) return false;
  }
  if (linear == attention.q_proj || linear == attention.k_proj || linear == attention.v_proj ||
      (!attention.qkv_proj.empty() && linear == attention.qkv_proj)) {
    return qkv_bias;
  }
  if (linear == mlp.gate_proj || linear == mlp.up_proj || linear == mlp.down_proj ||
      (!mlp.gate_up_proj.empty() && linear == mlp.gate_up_proj)) {
    return mlp_bias;
  }
  return false;
}

const ArchSpec& find_arch_spec(const std::string& architecture) {
  for (const auto& spec : table()) {
    if (spec.architecture == architecture) return spec;
  }
  std::string supported;
  for (const auto& name : supported_architectures()) supported += (supported.empty() ? "" : ", ") + name;
  throw UnsupportedError("architecture '" + architecture + "' is not supported (supported: " +
                         supported + ")");
}

std::vector<std::string> supported_architectures() {
  std::vector<std::string> names;
  for (const auto& spec : table()) names.push_back(spec.architecture);
  return names;
}

}  // namespace gptq::model
