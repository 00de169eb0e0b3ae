// RoPE settings from config.json (see rope_config.h). Each RoPE type reads its
// keys as transformers' _compute_*_parameters does, defaults included.
#include "model/rope_config.h"

#include <cmath>
#include <string>

#include "gptq/core/error.h"

namespace gptq::model::detail {

using nlohmann::json;

namespace {

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

}  // namespace

double yarn_mscale(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
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

}  // namespace gptq::model::detail
