// config.json -> ModelConfig. Every error names the key and the file.
#include "gptq/model/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gptq/core/error.h"

namespace gptq::model {
namespace {

using nlohmann::json;

// Typed reads of one config.json object; `source_` names the file in errors.
class Keys {
 public:
  Keys(const json& object, std::string source) : object_(object), source_(std::move(source)) {}

  bool has(const std::string& key) const {
    return object_.contains(key) && !object_.at(key).is_null();
  }
  // The key is in the file, null or not.
  bool written(const std::string& key) const { return object_.contains(key); }
  const json& raw(const std::string& key) const {
    GPTQ_CHECK(has(key), source_, ": missing required key '", key, "'");
    return object_.at(key);
  }
  int64_t integer(const std::string& key) const {
    const json& value = raw(key);
    GPTQ_CHECK(value.is_number_integer(), source_, ": key '", key, "' must be an integer, got ",
               value.dump());
    return value.get<int64_t>();
  }
  int64_t positive(const std::string& key) const {
    int64_t value = integer(key);
    GPTQ_CHECK(value > 0, source_, ": key '", key, "' must be positive, got ", value);
    return value;
  }
  int64_t positive_or(const std::string& key, int64_t fallback) const {
    return has(key) ? positive(key) : fallback;
  }
  double number(const std::string& key) const {
    const json& value = raw(key);
    GPTQ_CHECK(value.is_number(), source_, ": key '", key, "' must be a number, got ", value.dump());
    return value.get<double>();
  }
  double number_or(const std::string& key, double fallback) const {
    return has(key) ? number(key) : fallback;
  }
  bool boolean_or(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& value = object_.at(key);
    GPTQ_CHECK(value.is_boolean(), source_, ": key '", key, "' must be true or false, got ",
               value.dump());
    return value.get<bool>();
  }
  std::string string_or(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& value = object_.at(key);
    GPTQ_CHECK(value.is_string(), source_, ": key '", key, "' must be a string, got ", value.dump());
    return value.get<std::string>();
  }
  std::optional<int64_t> optional_integer(const std::string& key) const {
    if (!has(key) || !object_.at(key).is_number_integer()) return std::nullopt;
    return object_.at(key).get<int64_t>();
  }
  const std::string& source() const { return source_; }

 private:
  const json& object_;
  std::string source_;
};

bool resolve_bias(const BiasRule& rule, const Keys& keys) {
  switch (rule.kind) {
    case BiasRule::Kind::kNever: return false;
    case BiasRule::Kind::kAlways: return true;
    case BiasRule::Kind::kConfigKey: return keys.boolean_or(rule.config_key, rule.default_value);
  }
  return false;
}

// transformers' mscale: 0.1 * mscale * ln(factor) + 1, or 1 for factor <= 1.
double yarn_mscale(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

// YaRN's settings as transformers' _compute_yarn_parameters reads them (factor
// from max_position_embeddings / original when null; the cos/sin factor from
// mscale / mscale_all_dim unless attention_factor is given).
RopeConfig parse_yarn(const Keys& params, RopeConfig rope, int64_t max_positions) {
  rope.type = RopeType::kYarn;
  rope.factor = params.has("factor") ? params.number("factor")
                                     : static_cast<double>(max_positions) /
                                           static_cast<double>(rope.original_max_position_embeddings);
  const double mscale = params.number_or("mscale", 0.0);
  if (params.has("attention_factor")) {
    rope.attention_factor = params.number("attention_factor");
  } else if (mscale != 0 && rope.mscale_all_dim != 0) {
    rope.attention_factor = yarn_mscale(rope.factor, mscale) / yarn_mscale(rope.factor, rope.mscale_all_dim);
  } else {
    rope.attention_factor = yarn_mscale(rope.factor, 1.0);
  }
  // transformers: `get("beta_fast") or 32`, so 0 means the default too.
  rope.beta_fast = params.number_or("beta_fast", 0.0);
  if (rope.beta_fast == 0) rope.beta_fast = 32;
  rope.beta_slow = params.number_or("beta_slow", 0.0);
  if (rope.beta_slow == 0) rope.beta_slow = 1;
  rope.truncate = params.boolean_or("truncate", true);
  return rope;
}

// One RoPE parameter object ({rope_type|type, rope_theta, factor, ...});
// `where` names it in errors.
RopeConfig parse_rope_block(const json& block, const Keys& keys, const std::string& where,
                            RopeConfig rope, int64_t max_positions) {
  GPTQ_CHECK(block.is_object(), keys.source(), ": key '", where, "' must be an object or null");
  Keys params(block, keys.source() + " (" + where + ")");
  rope.theta = params.number_or("rope_theta", rope.theta);
  rope.partial_rotary_factor = params.number_or("partial_rotary_factor", rope.partial_rotary_factor);
  std::string type = params.string_or("rope_type", params.string_or("type", "default"));
  if (type == "default") return rope;
  rope.mscale_all_dim = params.number_or("mscale_all_dim", 0.0);
  if (type == "linear") {
    rope.type = RopeType::kLinear;
    rope.factor = params.number("factor");
    return rope;
  }
  GPTQ_CHECK_SUPPORTED(type == "llama3" || type == "yarn", keys.source(), ": ", where, ".rope_type '", type,
                       "' is not supported (supported: default, linear, llama3, yarn)");
  rope.original_max_position_embeddings =
      keys.has("original_max_position_embeddings")
          ? keys.positive("original_max_position_embeddings")
          : params.positive_or("original_max_position_embeddings", max_positions);
  if (type == "yarn") return parse_yarn(params, rope, max_positions);
  rope.type = RopeType::kLlama3;
  rope.factor = params.number("factor");
  rope.low_freq_factor = params.number("low_freq_factor");
  rope.high_freq_factor = params.number("high_freq_factor");
  GPTQ_CHECK(rope.high_freq_factor != rope.low_freq_factor, keys.source(), ": ", where,
             ": high_freq_factor must differ from low_freq_factor");
  return rope;
}

// transformers 5 writes "rope_parameters" {rope_type, rope_theta, ...};
// transformers 4 wrote "rope_theta" and "rope_scaling" {type|rope_type, ...}.
// Per layer type (Gemma-3): "rope_parameters" {"full_attention": {...},
// "sliding_attention": {...}}, or transformers 4's "rope_scaling" for the full
// layers and "rope_local_base_freq" for the sliding ones.
void parse_rope(const json& root, const Keys& keys, const ArchSpec& spec, ModelConfig& config) {
  RopeConfig base;
  base.theta = keys.number_or("rope_theta", 10000.0);
  base.partial_rotary_factor = keys.number_or("partial_rotary_factor", 1.0);
  const int64_t max_positions = config.max_position_embeddings;
  const std::string block_key = keys.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const bool per_type = spec.rope_per_layer_type && keys.has(block_key) && root.at(block_key).is_object() &&
                        root.at(block_key).contains("full_attention");
  if (per_type) {
    const json& block = root.at(block_key);
    config.rope = parse_rope_block(block.at("full_attention"), keys, block_key + ".full_attention", base,
                                   max_positions);
    GPTQ_CHECK(block.contains("sliding_attention"), keys.source(), ": key '", block_key,
               "' has 'full_attention' but no 'sliding_attention'");
    config.sliding_rope = parse_rope_block(block.at("sliding_attention"), keys,
                                           block_key + ".sliding_attention", base, max_positions);
  } else {
    config.rope = keys.has(block_key) ? parse_rope_block(root.at(block_key), keys, block_key, base, max_positions)
                                      : base;
    if (spec.rope_per_layer_type) {
      RopeConfig local = base;
      local.theta = keys.number_or("rope_local_base_freq", 10000.0);
      config.sliding_rope = local;
    }
  }
  const double factor = config.rope.partial_rotary_factor;
  GPTQ_CHECK(factor > 0 && factor <= 1, keys.source(), ": partial_rotary_factor must be in (0, 1], got ", factor);
  config.rotary_dim = static_cast<int64_t>(static_cast<double>(config.head_dim) * factor);
  GPTQ_CHECK(config.rotary_dim >= 2 && config.rotary_dim % 2 == 0, keys.source(),
             ": head_dim x partial_rotary_factor must be an even number of dims, got ", config.rotary_dim);
  GPTQ_CHECK(!config.sliding_rope || config.sliding_rope->partial_rotary_factor == factor, keys.source(),
             ": full and sliding layers must rotate the same number of dims");
}

Activation parse_activation(const Keys& keys, const ArchSpec& spec) {
  const std::string act = keys.string_or(spec.activation_key, "silu");
  if (act == "silu" || act == "swish") return Activation::kSilu;
  if (act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu_fast") return Activation::kGeluTanh;
  if (act == "gelu") return Activation::kGelu;
  throw UnsupportedError(keys.source() + ": " + spec.activation_key + " '" + act +
                         "' is not supported (silu, swish, gelu_pytorch_tanh, gelu)");
}

// A positive number under `key`, or 0 when the family has no such key or the
// config sets it to null.
double optional_positive(const Keys& keys, const std::string& key) {
  if (key.empty() || !keys.has(key)) return 0;
  const double value = keys.number(key);
  GPTQ_CHECK(value > 0, keys.source(), ": key '", key, "' must be positive or null, got ", value);
  return value;
}

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

// MLA widths; "q_lora_rank": null means a plain q_proj.
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

std::string first_architecture(const json& root, const Keys& keys) {
  const json& list = keys.raw("architectures");
  GPTQ_CHECK(list.is_array() && !list.empty() && list[0].is_string(), keys.source(),
             ": key 'architectures' must be a non-empty list of names");
  return list[0].get<std::string>();
}

}  // namespace

std::string ModelConfig::layer_prefix(int layer) const {
  return arch.layer_prefix + std::to_string(layer) + ".";
}

const LayerSpec& ModelConfig::layer(int layer) const {
  GPTQ_ASSERT(layer >= 0 && layer < static_cast<int>(layers.size()), "layer ", layer, " out of range");
  return layers[layer];
}

int64_t ModelConfig::n_linears() const {
  int64_t total = 0;
  for (const auto& spec : layers) total += static_cast<int64_t>(spec.linear_names().size());
  return total;
}

std::string layer_prefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }

c10::ScalarType dtype_from_hf_name(const std::string& name) {
  if (name == "float32" || name == "float") return c10::kFloat;
  if (name == "bfloat16") return c10::kBFloat16;
  if (name == "float16" || name == "half") return c10::kHalf;
  throw UnsupportedError("dtype '" + name + "' is not supported (float32, bfloat16, float16)");
}

std::string dtype_to_hf_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    default: throw UnsupportedError(std::string("dtype ") + c10::toString(dtype) + " is not supported");
  }
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    throw InputError(source + ": not valid JSON: " + e.what());
  }
  GPTQ_CHECK(root.is_object(), source, ": expected a JSON object");
  Keys keys(root, source);

  ModelConfig config;
  config.architecture = first_architecture(root, keys);
  try {
    config.arch = find_arch_spec(config.architecture);
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(source + ": " + e.what());
  }
  const ArchSpec& spec = config.arch;

  config.vocab_size = keys.positive("vocab_size");
  config.hidden_size = keys.positive("hidden_size");
  config.intermediate_size = keys.positive("intermediate_size");
  config.n_layers = keys.positive("num_hidden_layers");
  config.n_heads = keys.positive("num_attention_heads");
  config.n_kv_heads = keys.positive_or("num_key_value_heads", config.n_heads);
  GPTQ_CHECK(config.n_heads % config.n_kv_heads == 0, source, ": num_attention_heads (",
             config.n_heads, ") must be a multiple of num_key_value_heads (", config.n_kv_heads, ")");
  if (keys.has("head_dim")) {
    config.head_dim = keys.positive("head_dim");
  } else {
    GPTQ_CHECK(config.hidden_size % config.n_heads == 0, source, ": hidden_size (",
               config.hidden_size, ") is not divisible by num_attention_heads (", config.n_heads,
               ") and there is no 'head_dim' key");
    config.head_dim = config.hidden_size / config.n_heads;
  }
  MlaShape mla;
  if (spec.attention.kind == AttentionKind::kMla) {
    // Only the shared rope part rotates; transformers sets head_dim to it.
    mla = parse_mla(keys);
    config.head_dim = mla.qk_rope_head_dim;
    GPTQ_CHECK_SUPPORTED(config.n_kv_heads == config.n_heads, source, ": num_key_value_heads (", config.n_kv_heads,
                         ") != num_attention_heads (", config.n_heads, ") is not supported for latent attention");
  }
  GPTQ_CHECK(config.head_dim % 2 == 0, source, ": head_dim must be even for RoPE, got ",
             config.head_dim);
  config.max_position_embeddings = keys.positive_or("max_position_embeddings", 2048);
  config.rms_norm_eps = keys.number_or("rms_norm_eps", 1e-6);
  GPTQ_CHECK(config.rms_norm_eps >= 0, source, ": key 'rms_norm_eps' must not be negative");

  if (spec.attention.clip_qkv && keys.has("clip_qkv")) {
    config.clip_qkv = keys.number("clip_qkv");
    GPTQ_CHECK(config.clip_qkv > 0, source, ": key 'clip_qkv' must be positive or null");
  }
  const Activation activation = parse_activation(keys, spec);
  parse_rope(root, keys, spec, config);
  GPTQ_CHECK_SUPPORTED(!keys.boolean_or("use_bidirectional_attention", false), source,
                       ": use_bidirectional_attention (an encoder) is not supported");
  const double query_scalar = optional_positive(keys, spec.attention.query_scale_key);
  const double attention_softcap = optional_positive(keys, spec.attention.softcap_key);
  config.final_logit_softcap = optional_positive(keys, spec.final_softcap_key);

  config.tie_word_embeddings = keys.boolean_or("tie_word_embeddings", spec.tie_word_embeddings_default);
  const std::vector<int64_t> windows = parse_sliding_window(root, keys, spec, config.n_layers);
  const std::vector<bool> sparse = parse_moe_layers(root, keys, spec, config.n_layers);
  for (int layer = 0; layer < config.n_layers; ++layer) {
    LayerSpec layer_spec;
    layer_spec.index = layer;
    layer_spec.input_norm = spec.input_norm;
    layer_spec.post_attention_norm = spec.post_attention_norm;
    layer_spec.attention_output_norm = spec.attention_output_norm;
    layer_spec.mlp_output_norm = spec.mlp_output_norm;
    layer_spec.attention = spec.attention;
    layer_spec.mlp = spec.mlp;
    layer_spec.mlp.activation = activation;
    // pow(x, -0.5) as transformers writes it (1 / sqrt(x) can differ in the last bit).
    layer_spec.attention_scale = query_scalar > 0 ? std::pow(query_scalar, -0.5) : 0.0;
    if (spec.attention.kind == AttentionKind::kMla) {
      layer_spec.mla = mla;
      layer_spec.attention_scale = mla_attention_scale(mla, config.rope);
    }
    layer_spec.attention_softcap = attention_softcap;
    // Gemma-3: the sliding layers rotate with their own table.
    layer_spec.rope_table = config.sliding_rope && windows[layer] > 0 ? 1 : 0;
    layer_spec.qkv_bias = resolve_bias(spec.attention.qkv_bias, keys);
    layer_spec.o_bias = resolve_bias(spec.attention.o_bias, keys);
    layer_spec.mlp_bias = resolve_bias(spec.mlp.bias, keys);
    layer_spec.sliding_window = windows[layer];
    layer_spec.intermediate_size = config.intermediate_size;
    layer_spec.clip_qkv = config.clip_qkv;
    if (sparse[layer]) resolve_moe(keys, spec, layer_spec);
    layer_spec.groups = layer_groups(layer_spec);
    config.layers.push_back(std::move(layer_spec));
  }

  std::string dtype_key = keys.has("dtype") ? "dtype" : "torch_dtype";
  if (keys.has(dtype_key)) {
    try {
      config.torch_dtype = dtype_from_hf_name(keys.string_or(dtype_key, "float32"));
    } catch (const UnsupportedError& e) {
      throw UnsupportedError(source + ": key '" + dtype_key + "': " + e.what());
    }
  }
  if (keys.has("quantization_config")) {
    const json& quantization = root.at("quantization_config");
    config.quantization_method =
        quantization.is_object() && quantization.contains("quant_method") &&
                quantization.at("quant_method").is_string()
            ? quantization.at("quant_method").get<std::string>()
            : std::string("unknown");
  }
  config.bos_token_id = keys.optional_integer("bos_token_id");
  config.eos_token_id = keys.optional_integer("eos_token_id");
  return config;
}

ModelConfig load_model_config(const std::filesystem::path& dir) {
  // A folder (or a path that is not a .json file) means <folder>/config.json.
  std::filesystem::path path = dir.extension() == ".json" && !std::filesystem::is_directory(dir)
                                   ? dir
                                   : dir / "config.json";
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in.good(), "cannot read '", path.string(), "': ",
             std::filesystem::exists(path) ? "permission denied" : "no such file");
  std::stringstream text;
  text << in.rdbuf();
  ModelConfig config = parse_model_config(text.str(), path.string());
  config.dir = path.parent_path();
  return config;
}

}  // namespace gptq::model
