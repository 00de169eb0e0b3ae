#pragma once
// ArchSpec: what a decoder-only model family IS, as data. One row per
// supported `architectures[0]` of config.json; the block forward reads these
// fields and never asks which family it runs.
//
// Tensor names are Hugging Face's: "<layer_prefix><i>.<relative name>", e.g.
// "model.layers.3.self_attn.q_proj.weight". Linear names in
// `sequential_groups` are relative to the layer and carry no ".weight".
//
// sequential_groups: the true-sequential groups of linears in the order the
// block consumes them. Every linear of a group reads the same input, so one
// Hessian serves the group; a later group sees the outputs of the earlier
// (possibly already quantized) groups. Llama:
//   {q_proj, k_proj, v_proj} <- input_layernorm(h)            [B, T, hidden]
//   {o_proj}                 <- attention output              [B, T, n_heads*head_dim]
//   {gate_proj, up_proj}     <- post_attention_layernorm(h')  [B, T, hidden]
//   {down_proj}              <- silu(gate) * up               [B, T, intermediate]
#include <string>
#include <vector>

namespace gptq::model {

// Whether a projection has a bias: never, always, or as a config.json key says.
struct BiasRule {
  enum class Kind { kNever, kAlways, kConfigKey };
  Kind kind = Kind::kNever;
  std::string config_key;      // kConfigKey: boolean key in config.json
  bool default_value = false;  // kConfigKey: when the key is absent
};

// Which layers use a sliding attention window (config.json "sliding_window").
enum class SlidingWindowRule {
  kNone,        // always full causal attention
  kAllLayers,   // Mistral: every layer when "sliding_window" is not null
  kLayerTypes,  // Qwen2/3: "layer_types" == "sliding_attention", or derived
                // from "use_sliding_window" and "max_window_layers"
};

enum class NormKind { kRmsNorm };           // weight * (x / sqrt(mean(x^2) + eps)), in fp32
enum class MlpKind { kGatedSilu };          // down(silu(gate(x)) * up(x))
enum class AttentionKind { kRopeCausalGqa };  // RoPE (rotate_half), causal, n_kv_heads <= n_heads

struct ArchSpec {
  std::string architecture;  // config.json "architectures"[0], e.g. "LlamaForCausalLM"
  NormKind norm = NormKind::kRmsNorm;
  AttentionKind attention = AttentionKind::kRopeCausalGqa;
  MlpKind mlp = MlpKind::kGatedSilu;
  BiasRule qkv_bias;  // q_proj, k_proj, v_proj
  BiasRule o_bias;
  BiasRule mlp_bias;  // gate_proj, up_proj, down_proj
  bool qk_norm = false;  // Qwen3: RMSNorm over head_dim on q and k before RoPE
  SlidingWindowRule sliding_window = SlidingWindowRule::kNone;
  bool tie_word_embeddings_default = false;  // when config.json has no such key

  // Tensor names.
  std::string embed_tokens = "model.embed_tokens.weight";
  std::string final_norm = "model.norm.weight";
  std::string lm_head = "lm_head.weight";
  std::string layer_prefix = "model.layers.";
  std::string input_norm = "input_layernorm";
  std::string post_attention_norm = "post_attention_layernorm";
  std::string q_norm = "self_attn.q_norm";
  std::string k_norm = "self_attn.k_norm";

  std::vector<std::vector<std::string>> sequential_groups;

  // All linears of a block, in group order.
  std::vector<std::string> linear_names() const;
};

// The spec for `architecture`, or UnsupportedError listing the supported ones.
const ArchSpec& find_arch_spec(const std::string& architecture);
// Names of every supported architecture, in table order.
std::vector<std::string> supported_architectures();

}  // namespace gptq::model
