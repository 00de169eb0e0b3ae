#pragma once
// ArchSpec: what a decoder-only model family IS, as data; LayerSpec: one
// decoder layer of one checkpoint, the family's parts with the settings its
// config.json gives that layer. The block forward, the weight loader and the
// quantizer read these and never ask which family they run.
//
// Tensor names are Hugging Face's: "<layer_prefix><i>.<relative name>", e.g.
// "model.layers.3.self_attn.q_proj.weight". Linear names are relative to the
// layer and carry no ".weight".
//
// Sequential groups: the true-sequential groups of linears of a layer, in the
// order the block consumes them, each with the input site it reads. Every
// linear of a group reads the same input, so one Hessian serves the group; a
// later group sees the outputs of the earlier (possibly already quantized)
// groups. The gated dense layer (Llama and the families built like it):
//   {q_proj, k_proj, v_proj} <- input_layernorm(h)            [B, T, hidden]      kAttentionInput
//   {o_proj}                 <- attention output              [B, T, n_heads*head_dim] kAttentionOutput
//   {gate_proj, up_proj}     <- post_attention_layernorm(h')  [B, T, hidden]      kMlpInput
//   {down_proj}              <- act(gate) * up                [B, T, intermediate] kMlpHidden
// Fused checkpoints (Phi-3) have {qkv_proj} and {gate_up_proj} instead.
// Multi-head latent attention (DeepSeek-V3) projects through two low-rank
// latents, each normed before its up-projection:
//   {q_a_proj | q_proj, kv_a_proj_with_mqa} <- input_layernorm(h)       kAttentionInput
//   {q_b_proj}  <- q_a_layernorm(q_a_proj(n1))            [B, T, q_lora_rank]   kQueryLatent
//   {kv_b_proj} <- kv_a_layernorm(kv_a_proj(n1)[:kv_lora_rank])  [B, T, kv_lora_rank] kKvLatent
//   {o_proj}    <- attention output                        [B, T, n_heads*v_head_dim]
// Gemma's sandwich norms (on the attention and MLP outputs) sit after the
// linears, so they change no group's input site.
//
// Sparse (MoE) layers: each routed expert's {gate, up} reads the tokens the
// router sends it at kMlpInput, its {down} that expert's activation at
// kMlpHidden; a shared expert reads every token like a dense MLP.
//
// Adding a family built from parts that exist is one table entry (arch.cpp);
// a new part (an attention or MLP kind) is an enum value, its groups in
// layer_groups() and its forward in its block stage (model/attention.cpp, dense_mlp.cpp, ...).
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
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

// kRmsNorm: weight * (x / sqrt(mean(x^2) + eps)): normalised in fp32, cast
// back, then multiplied (LlamaRMSNorm).
// kRmsNormPlusOne: (1 + weight) * (x / sqrt(mean(x^2) + eps)), all in fp32,
// cast at the end (GemmaRMSNorm: the stored weight is an offset from 1).
enum class NormKind { kRmsNorm, kRmsNormPlusOne };
// kRopeCausalGqa: RoPE (rotate_half), causal, n_kv_heads <= n_heads, scale
// 1/sqrt(head_dim).
// kMla: DeepSeek's multi-head latent attention (MlaShape): q from q_proj or
// q_b_proj(norm(q_a_proj(x))); k/v from kv_b_proj(norm(latent)), each head's
// key [k_nope | k_rope] with k_rope one rotated head shared by all heads;
// causal, scale qk_head_dim^-0.5 (times YaRN's mscale^2 when set).
enum class AttentionKind { kRopeCausalGqa, kMla };
// Where a q/k RMSNorm sits: none, over each head's head_dim (Qwen3), or over
// the whole projection before it is split into heads (OLMoE).
enum class QkNorm { kNone, kPerHead, kWholeProjection };
// kDenseGated: down(act(gate(x)) * up(x)); gate and up are two linears, or one
// fused gate_up linear whose output is [gate | up] (Phi-3).
// kSparseMoe: a softmax top-k router picks experts (each a gated MLP) per
// token; their outputs, weighted by the router, are summed; optionally plus a
// shared expert scaled by sigmoid(shared_expert_gate(x)) (Qwen2-MoE).
enum class MlpKind { kDenseGated, kSparseMoe };
// config.json's activation ("hidden_act", or "hidden_activation" for Gemma):
// "silu"/"swish", "gelu_pytorch_tanh" (GeGLU with tanh-approximated GELU) or
// "gelu" (exact).
enum class Activation { kSilu, kGeluTanh, kGelu };

// Which layers of a MoE family have the sparse MLP (the others are dense).
enum class MoeLayerRule {
  kAllLayers,   // Mixtral, OLMoE
  kSparseStep,  // Qwen2/3-MoE: (i + 1) % decoder_sparse_step == 0 and i not in mlp_only_layers
  kFirstKDense,  // DeepSeek-V3: i >= first_k_dense_replace
};

// How the router turns logits into top-k experts and weights.
// kSoftmaxTopK: softmax, top-k, optional renormalisation (Mixtral, Qwen-MoE, OLMoE).
// kSigmoidGroupLimited (DeepSeek-V3), all in fp32 with the router weight in fp32:
//   s = sigmoid(router(x)); c = s + e_score_correction_bias (for choosing only);
//   the top topk_group of n_group groups by the sum of each group's top-2 c;
//   top-k of c within those groups; weights s gathered at those experts,
//   divided by (their sum + 1e-20) when norm_topk_prob, times routed_scaling_factor.
enum class RouterKind { kSoftmaxTopK, kSigmoidGroupLimited };

// The routed experts of a sparse MLP. Expert e's linears are
// "<experts><e>.<gate|up|down>"; the router is a [n_experts, hidden] linear
// that is never quantized (nor is the shared expert's gate).
struct MoeSpec {
  MoeLayerRule layers = MoeLayerRule::kAllLayers;
  RouterKind router_kind = RouterKind::kSoftmaxTopK;
  std::string router = "mlp.gate";
  // kSigmoidGroupLimited: the [n_experts] score-correction bias, fp32 like the router.
  std::string router_bias = "mlp.gate.e_score_correction_bias";
  std::string experts = "mlp.experts.";
  std::string gate = "gate_proj";
  std::string up = "up_proj";
  std::string down = "down_proj";
  // Top-k probabilities renormalised to sum 1: always (Mixtral) or as
  // config.json "norm_topk_prob" says (Qwen-MoE, OLMoE: false when absent;
  // DeepSeek-V3: true when absent).
  bool always_renormalize = false;
  bool renormalize_default = false;
  // Mixtral keeps the routing weights in fp32 and multiplies expert outputs
  // in fp32; the others cast them to the compute dtype first.
  bool fp32_routing_weights = false;
  // config.json key of the experts' intermediate width ("moe_intermediate_size"
  // for Qwen-MoE; Mixtral and OLMoE use "intermediate_size").
  std::string intermediate_key = "intermediate_size";
  bool shared_expert = false;  // Qwen2-MoE, DeepSeek-V3
  // The shared expert's width: config key "shared_expert_intermediate_size"
  // (Qwen2-MoE), or this key's count times the experts' width (DeepSeek-V3
  // "n_shared_experts").
  std::string shared_count_key;
  std::string shared_prefix = "mlp.shared_expert.";
  // Its sigmoid gate (Qwen2-MoE); empty: ungated (DeepSeek-V3).
  std::string shared_gate = "mlp.shared_expert_gate";
};

// Where in the block a group of linears reads its input, in block order.
enum class InputSite { kAttentionInput, kQueryLatent, kKvLatent, kAttentionOutput, kMlpInput, kMlpHidden };
const char* input_site_name(InputSite site);

struct NormSpec {
  NormSpec() = default;
  NormSpec(NormKind norm_kind, std::string norm_name, std::optional<double> fixed_eps = std::nullopt)
      : kind(norm_kind), name(std::move(norm_name)), eps(fixed_eps) {}
  NormKind kind = NormKind::kRmsNorm;
  std::string name;  // relative tensor name without ".weight"; empty: no such norm
  // A fixed epsilon (DeepSeek's latent norms use 1e-6 whatever rms_norm_eps
  // says); unset: config.json "rms_norm_eps".
  std::optional<double> eps;
  bool present() const { return !name.empty(); }
};

// Multi-head latent attention's names (AttentionKind::kMla); q_proj and
// o_proj are AttentionSpec's.
struct MlaSpec {
  std::string q_a_proj = "self_attn.q_a_proj";
  NormSpec q_a_norm{NormKind::kRmsNorm, "self_attn.q_a_layernorm", 1e-6};
  std::string q_b_proj = "self_attn.q_b_proj";
  std::string kv_a_proj = "self_attn.kv_a_proj_with_mqa";
  NormSpec kv_a_norm{NormKind::kRmsNorm, "self_attn.kv_a_layernorm", 1e-6};
  std::string kv_b_proj = "self_attn.kv_b_proj";
};

// MLA widths from config.json (per head unless noted).
struct MlaShape {
  int64_t q_lora_rank = 0;  // 0 ("q_lora_rank": null): a plain q_proj
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  // "rope_interleave": the rotary dims are stored as pairs (x0, x1), (x2, x3), ...
  bool rope_interleave = false;
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

struct AttentionSpec {
  AttentionKind kind = AttentionKind::kRopeCausalGqa;
  // Phi-3: one fused linear whose output is [q | k | v]; empty: three linears.
  std::string qkv_proj;
  std::string q_proj = "self_attn.q_proj";
  std::string k_proj = "self_attn.k_proj";
  std::string v_proj = "self_attn.v_proj";
  std::string o_proj = "self_attn.o_proj";
  QkNorm qk_norm = QkNorm::kNone;  // before RoPE
  // OLMoE: q, k and v clamped to [-clip, clip] when config.json "clip_qkv" is set.
  bool clip_qkv = false;
  NormSpec q_norm{NormKind::kRmsNorm, "self_attn.q_norm"};
  NormSpec k_norm{NormKind::kRmsNorm, "self_attn.k_norm"};
  MlaSpec mla;  // kMla only
  BiasRule qkv_bias;  // q_proj, k_proj, v_proj (or qkv_proj); kMla: q_a_proj, kv_a_proj
  BiasRule o_bias;
  // Gemma: scores scaled by query_pre_attn_scalar^-0.5 instead of head_dim^-0.5
  // (config key; empty: head_dim), and soft-capped, cap * tanh(scores / cap),
  // before the mask when the config key holds a number.
  std::string query_scale_key;
  std::string softcap_key;
};

struct MlpSpec {
  MlpKind kind = MlpKind::kDenseGated;
  Activation activation = Activation::kSilu;
  std::string gate_up_proj;  // Phi-3: fused [gate | up]; empty: gate_proj and up_proj
  std::string gate_proj = "mlp.gate_proj";
  std::string up_proj = "mlp.up_proj";
  std::string down_proj = "mlp.down_proj";
  BiasRule bias;  // gate, up, down
};

// A group reads every token of its site, or (expert >= 0) only the tokens the
// router sends to routed expert `expert`.
struct LinearGroup {
  InputSite site = InputSite::kAttentionInput;
  std::vector<std::string> linears;
  int expert = -1;
  bool operator==(const LinearGroup&) const = default;
};

struct ArchSpec {
  std::string architecture;  // config.json "architectures"[0], e.g. "LlamaForCausalLM"
  NormSpec input_norm{NormKind::kRmsNorm, "input_layernorm"};
  // The norm in front of the MLP (Llama calls it post_attention_layernorm).
  NormSpec post_attention_norm{NormKind::kRmsNorm, "post_attention_layernorm"};
  // Gemma's sandwich norms, on the attention and the MLP outputs before each
  // residual add; absent (empty names) elsewhere.
  NormSpec attention_output_norm;
  NormSpec mlp_output_norm;
  AttentionSpec attention;
  MlpSpec mlp;                    // dense layers (all layers of a dense family)
  bool has_moe = false;           // MoE family: moe.layers picks the sparse layers
  MoeSpec moe;
  SlidingWindowRule sliding_window = SlidingWindowRule::kNone;
  // kLayerTypes without "layer_types" in config.json: layer i slides unless
  // (i + 1) % pattern == 0 (Gemma-2: 2, Gemma-3: 6); 0: Qwen's max_window_layers rule.
  int sliding_pattern = 0;
  // Gemma-3: sliding layers use rope_parameters["sliding_attention"], full
  // layers rope_parameters["full_attention"] (another theta, maybe scaled).
  bool rope_per_layer_type = false;
  bool tie_word_embeddings_default = false;  // when config.json has no such key
  std::string activation_key = "hidden_act";
  // Gemma: the embedding output is multiplied by sqrt(hidden_size), rounded
  // to the compute dtype first (as transformers' scaled embedding).
  bool scale_embeddings = false;
  // Gemma-2: logits soft-capped, cap * tanh(logits / cap), when this config
  // key holds a number.
  std::string final_softcap_key;

  // Tensor names outside the layers.
  std::string embed_tokens = "model.embed_tokens.weight";
  std::string final_norm = "model.norm.weight";
  NormKind final_norm_kind = NormKind::kRmsNorm;
  std::string lm_head = "lm_head.weight";
  std::string layer_prefix = "model.layers.";
};

// One decoder layer of a checkpoint: the family's parts with this layer's
// settings resolved from config.json.
struct LayerSpec {
  int index = 0;
  NormSpec input_norm;
  NormSpec post_attention_norm;
  NormSpec attention_output_norm;  // absent unless the family has sandwich norms
  NormSpec mlp_output_norm;
  AttentionSpec attention;
  MlpSpec mlp;  // kind kSparseMoe: the layer's MLP is `moe`
  MoeSpec moe;
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  int64_t sliding_window = 0;  // 0: full causal attention
  int rope_table = 0;          // which RotaryCache table (ModelConfig::ropes) the layer uses
  double attention_scale = 0;  // scores * this; 0: 1/sqrt(head_dim)
  double attention_softcap = 0;  // 0: none
  int64_t intermediate_size = 0;  // dense MLP width (kDenseGated)
  double clip_qkv = 0;            // attention.clip_qkv: the bound
  // Sparse MLP (kSparseMoe) settings from config.json.
  int64_t n_experts = 0;
  int64_t top_k = 0;
  bool renormalize_top_k = false;
  int64_t expert_intermediate_size = 0;
  int64_t shared_intermediate_size = 0;  // 0: no shared expert
  // RouterKind::kSigmoidGroupLimited: config.json n_group, topk_group, routed_scaling_factor.
  int64_t n_group = 1;
  int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  MlaShape mla;  // attention.kind == kMla
  std::vector<LinearGroup> groups;  // true-sequential, in block order

  bool is_moe() const { return mlp.kind == MlpKind::kSparseMoe; }
  // "<experts><e>.<gate|up|down>" of routed expert `expert`.
  std::string expert_linear(int expert, const std::string& which) const;
  std::string shared_linear(const std::string& which) const;

  // Every linear of the layer, in group order.
  std::vector<std::string> linear_names() const;
  // The groups reading `site`, as indices into `groups`.
  std::vector<int> groups_at(InputSite site) const;
  bool has_bias(const std::string& linear) const;
};

// The true-sequential groups of `layer` from its attention and MLP parts
// (a sparse MLP: one gate/up and one down group per routed expert, plus the
// shared expert's two groups).
std::vector<LinearGroup> layer_groups(const LayerSpec& layer);

// The spec for `architecture`, or UnsupportedError listing the supported ones.
const ArchSpec& find_arch_spec(const std::string& architecture);
// Names of every supported architecture, in table order.
std::vector<std::string> supported_architectures();

}  // namespace gptq::model
