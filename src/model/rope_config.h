#pragma once
// config.json's RoPE settings -> RopeConfig (private to model/): transformers
// 5's "rope_parameters" or transformers 4's "rope_theta" + "rope_scaling",
// per layer type for Gemma-3, and the rotary width they imply.
#include <nlohmann/json.hpp>

#include "gptq/model/config.h"
#include "model/config_keys.h"

namespace gptq::model::detail {

// Sets config.rope, config.sliding_rope (families with rope_per_layer_type)
// and config.rotary_dim; needs config.head_dim and max_position_embeddings.
// UnsupportedError for a rope_type other than default, linear, llama3, yarn.
void parse_rope(const nlohmann::json& root, const Keys& keys, const ArchSpec& spec, ModelConfig& config);

// transformers' YaRN mscale: 0.1 * mscale * ln(factor) + 1, or 1 for factor <= 1.
double yarn_mscale(double factor, double mscale);

}  // namespace gptq::model::detail
