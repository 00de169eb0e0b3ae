// config.json -> one LayerSpec per layer (see layer_specs.h). The rules for
// which layers slide and which are sparse are the families' (ArchSpec);
// every key is read as transformers reads it, defaults included.
#include "model/layer_specs.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "gptq/core/error.h"
#include "model/rope_config.h"

namespace gptq::model::detail {

using nlohmann::json;

namespace {

bool resolve_bias(const BiasRule& rule, const Keys& keys) {
  switch (rule.kind) {
    case BiasRule::Kind::kNever: return false;
    case BiasRule::Kind::kAlways: return true;
    case BiasRule::Kind::kConfigKey: return keys.boolean_or(rule.config_key, rule.default_value);
  }
  return false;
}

// The sliding window of each layer (0: full causal attention).
std::vector<int64_t> parse_sliding_window(const json& root, const Keys& keys, const ArchSpec& spec,
                                          int64_t n_layers) {
  std::vector<int64_t> windows(n_layers, 0);
  if (spec.sliding_window == SlidingWindowRule::kNone || !keys.has("sliding_window")) return windows;
  if (spec.sliding_window == SlidingWindowRule::kAllLayers) {
    std::fill(windows.begin(), windows.end(), keys.positive("sliding_window"));
    return windows;
  }
  // Qwen2-MoE writes "sliding_window": 0 when use_sliding_window is false;
  // Gemma has no such switch (its layer types decide).
  if (!keys.boolean_or("use_sliding_window", spec.sliding_pattern > 0)) return windows;
  int64_t window = keys.positive("sliding_window");
  if (keys.has("layer_types")) {
    const json& types = root.at("layer_types");
    GPTQ_CHECK(types.is_array() && static_cast<int64_t>(types.size()) == n_layers, keys.source(),
               ": key 'layer_types' must list one entry per layer (", n_layers, ")");
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      if (types[layer] == "sliding_attention") windows[layer] = window;
    }
    return windows;
  }
  if (spec.sliding_pattern > 0) {
    for (int64_t layer = 0; layer < n_layers; ++layer) {
      if ((layer + 1) % spec.sliding_pattern != 0) windows[layer] = window;
    }
    return windows;
  }
  int64_t first_sliding = keys.positive_or("max_window_layers", 28);
  for (int64_t layer = first_sliding; layer < n_layers; ++layer) windows[layer] = window;
  return windows;
}

// Which layers have the sparse MLP: all of them, or Qwen-MoE's rule
// (i + 1) % decoder_sparse_step == 0 and i not in mlp_only_layers.
std::vector<bool> parse_moe_layers(const json& root, const Keys& keys, const ArchSpec& spec,
                                   int64_t n_layers) {
  std::vector<bool> sparse(n_layers, spec.has_moe);
  if (!spec.has_moe || spec.moe.layers == MoeLayerRule::kAllLayers) return sparse;
  if (spec.moe.layers == MoeLayerRule::kFirstKDense) {
    const int64_t n_dense = keys.integer("first_k_dense_replace");
    GPTQ_CHECK(n_dense >= 0, keys.source(), ": key 'first_k_dense_replace' must not be negative");
    for (int64_t layer = 0; layer < std::min(n_dense, n_layers); ++layer) sparse[layer] = false;
    return sparse;
  }
  const int64_t step = keys.positive_or("decoder_sparse_step", 1);
  for (int64_t layer = 0; layer < n_layers; ++layer) sparse[layer] = (layer + 1) % step == 0;
  if (keys.has("mlp_only_layers")) {
    const json& dense = root.at("mlp_only_layers");
    GPTQ_CHECK(dense.is_array(), keys.source(), ": key 'mlp_only_layers' must be a list of layer indices");
    for (const json& entry : dense) {
      GPTQ_CHECK(entry.is_number_integer() && entry.get<int64_t>() >= 0 && entry.get<int64_t>() < n_layers,
                 keys.source(), ": key 'mlp_only_layers' lists ", entry.dump(), ", not a layer in [0, ",
                 n_layers, ")");
      sparse[entry.get<int64_t>()] = false;
    }
  }
  return sparse;
}

// DeepSeek-V3's router: n_group groups of experts, the best topk_group of
// them eligible, weights times routed_scaling_factor.
void resolve_group_limits(const Keys& keys, LayerSpec& layer) {
  // Required: transformers' defaults (8, 4, 2.5) are DeepSeek-V3's full-size
  // values, which a config that omits them rarely means.
  layer.n_group = keys.positive("n_group");
  layer.topk_group = keys.positive("topk_group");
  layer.routed_scaling_factor = keys.number("routed_scaling_factor");
  GPTQ_CHECK(layer.n_experts % layer.n_group == 0, keys.source(), ": the number of experts (", layer.n_experts,
             ") must be a multiple of n_group (", layer.n_group, ")");
  // Each group is scored by its two best experts.
  GPTQ_CHECK(layer.n_experts / layer.n_group >= 2, keys.source(), ": n_group (", layer.n_group,
             ") leaves fewer than 2 experts per group");
  GPTQ_CHECK(layer.topk_group <= layer.n_group, keys.source(), ": topk_group (", layer.topk_group,
             ") exceeds n_group (", layer.n_group, ")");
  GPTQ_CHECK(layer.top_k <= layer.topk_group * (layer.n_experts / layer.n_group), keys.source(),
             ": num_experts_per_tok (", layer.top_k, ") exceeds the experts of topk_group groups");
}

// The sparse MLP's settings for a layer of a MoE family.
void resolve_moe(const Keys& keys, const ArchSpec& spec, LayerSpec& layer) {
  layer.mlp.kind = MlpKind::kSparseMoe;
  layer.moe = spec.moe;
  // transformers names the count "num_local_experts" (Mixtral, Qwen3-MoE), "num_experts"
  // or "n_routed_experts" (DeepSeek-V3).
  layer.n_experts = keys.has("num_local_experts") ? keys.positive("num_local_experts")
                    : keys.has("n_routed_experts") ? keys.positive("n_routed_experts")
                                                   : keys.positive("num_experts");
  layer.top_k = keys.positive("num_experts_per_tok");
  GPTQ_CHECK(layer.top_k <= layer.n_experts, keys.source(), ": num_experts_per_tok (", layer.top_k,
             ") exceeds the number of experts (", layer.n_experts, ")");
  layer.renormalize_top_k = spec.moe.always_renormalize || keys.boolean_or("norm_topk_prob", spec.moe.renormalize_default);
  layer.expert_intermediate_size = keys.positive(spec.moe.intermediate_key);
  if (spec.moe.router_kind == RouterKind::kSigmoidGroupLimited) resolve_group_limits(keys, layer);
  if (spec.moe.shared_expert && !spec.moe.shared_count_key.empty()) {
    const int64_t n_shared = keys.integer(spec.moe.shared_count_key);
    GPTQ_CHECK(n_shared >= 0, keys.source(), ": key '", spec.moe.shared_count_key, "' must not be negative");
    layer.shared_intermediate_size = n_shared * layer.expert_intermediate_size;
  } else if (spec.moe.shared_expert) {
    layer.shared_intermediate_size = keys.has("shared_expert_intermediate_size")
                                         ? keys.integer("shared_expert_intermediate_size")
                                         : 0;
    GPTQ_CHECK(layer.shared_intermediate_size >= 0, keys.source(),
               ": key 'shared_expert_intermediate_size' must not be negative");
  }
}

// transformers' MLA scale: qk_head_dim^-0.5, times mscale^2 with
// mscale = 0.1 * mscale_all_dim * ln(factor) + 1 for a scaled RoPE that sets
// mscale_all_dim (factor > 1).
double mla_attention_scale(const MlaShape& mla, const RopeConfig& rope) {
  double scale = std::pow(static_cast<double>(mla.qk_head_dim()), -0.5);
  if (rope.type != RopeType::kDefault && rope.mscale_all_dim != 0) {
    const double mscale = yarn_mscale(rope.factor, rope.mscale_all_dim);
    scale = scale * mscale * mscale;
  }
  return scale;
}

// Layer `index` of `config`: the family's parts with this layer's settings.
LayerSpec make_layer_spec(const Keys& keys, const ModelConfig& config, const LayerSettings& settings, int index,
                          int64_t window, bool sparse) {
  const ArchSpec& spec = config.arch;
  LayerSpec layer_spec;
  layer_spec.index = index;
  layer_spec.input_norm = spec.input_norm;
  layer_spec.post_attention_norm = spec.post_attention_norm;
  layer_spec.attention_output_norm = spec.attention_output_norm;
  layer_spec.mlp_output_norm = spec.mlp_output_norm;
  layer_spec.attention = spec.attention;
  layer_spec.mlp = spec.mlp;
  layer_spec.mlp.activation = settings.activation;
  // pow(x, -0.5) as transformers writes it (1 / sqrt(x) can differ in the last bit).
  layer_spec.attention_scale = settings.query_scalar > 0 ? std::pow(settings.query_scalar, -0.5) : 0.0;
  if (spec.attention.kind == AttentionKind::kMla) {
    layer_spec.mla = settings.mla;
    layer_spec.attention_scale = mla_attention_scale(settings.mla, config.rope);
  }
  layer_spec.attention_softcap = settings.attention_softcap;
  // Gemma-3: the sliding layers rotate with their own table.
  layer_spec.rope_table = config.sliding_rope && window > 0 ? 1 : 0;
  layer_spec.qkv_bias = resolve_bias(spec.attention.qkv_bias, keys);
  layer_spec.o_bias = resolve_bias(spec.attention.o_bias, keys);
  layer_spec.mlp_bias = resolve_bias(spec.mlp.bias, keys);
  layer_spec.sliding_window = window;
  layer_spec.intermediate_size = config.intermediate_size;
  layer_spec.clip_qkv = config.clip_qkv;
  if (sparse) resolve_moe(keys, spec, layer_spec);
  layer_spec.groups = layer_groups(layer_spec);
  return layer_spec;
}

}  // namespace

Activation parse_activation(const Keys& keys, const ArchSpec& spec) {
  const std::string act = keys.string_or(spec.activation_key, "silu");
  if (act == "silu" || act == "swish") return Activation::kSilu;
  if (act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu_fast") return Activation::kGeluTanh;
  if (act == "gelu") return Activation::kGelu;
  throw UnsupportedError(keys.source() + ": " + spec.activation_key + " '" + act +
                         "' is not supported (silu, swish, gelu_pytorch_tanh, gelu)");
}

MlaShape parse_mla(const Keys& keys) {
  MlaShape mla;
  // null: a plain q_proj; absent is an error (transformers would assume 1536).
  GPTQ_CHECK(keys.written("q_lora_rank"), keys.source(), ": missing required key 'q_lora_rank' (null for a plain q_proj)");
  mla.q_lora_rank = keys.has("q_lora_rank") ? keys.positive("q_lora_rank") : 0;
  mla.kv_lora_rank = keys.positive("kv_lora_rank");
  mla.qk_nope_head_dim = keys.positive("qk_nope_head_dim");
  mla.qk_rope_head_dim = keys.positive("qk_rope_head_dim");
  mla.v_head_dim = keys.positive("v_head_dim");
  mla.rope_interleave = keys.boolean_or("rope_interleave", true);
  GPTQ_CHECK(mla.qk_rope_head_dim % 2 == 0, keys.source(), ": key 'qk_rope_head_dim' must be even, got ",
             mla.qk_rope_head_dim);
  return mla;
}

std::vector<LayerSpec> build_layer_specs(const json& root, const Keys& keys, const ModelConfig& config,
                                         const LayerSettings& settings) {
  const std::vector<int64_t> windows = parse_sliding_window(root, keys, config.arch, config.n_layers);
  const std::vector<bool> sparse = parse_moe_layers(root, keys, config.arch, config.n_layers);
  std::vector<LayerSpec> layers;
  for (int layer = 0; layer < config.n_layers; ++layer) {
    layers.push_back(make_layer_spec(keys, config, settings, layer, windows[layer], sparse[layer]));
  }
  return layers;
}

}  // namespace gptq::model::detail
