#pragma once
// config.json -> one LayerSpec per layer (private to model/): the family's
// parts (ArchSpec) with the settings the file gives each layer: biases,
// sliding window and RoPE table, attention scale and soft-cap, MLA widths,
// and for the sparse layers the experts, router and shared expert.
#include <nlohmann/json.hpp>

#include <vector>

#include "gptq/model/config.h"
#include "model/config_keys.h"

namespace gptq::model::detail {

// What every layer shares, read before the layers are built.
struct LayerSettings {
  Activation activation = Activation::kSilu;
  double query_scalar = 0;       // Gemma's query_pre_attn_scalar; 0: scale by head_dim
  double attention_softcap = 0;  // Gemma-2's attn_logit_softcapping; 0: none
  MlaShape mla;                  // AttentionKind::kMla only
};

// config.json's activation key ("hidden_act" / "hidden_activation");
// UnsupportedError for one we do not run.
Activation parse_activation(const Keys& keys, const ArchSpec& spec);
// MLA widths; "q_lora_rank" must be written ("null": a plain q_proj).
MlaShape parse_mla(const Keys& keys);

// The layers of `config` (whose dimensions, rope and arch are already read),
// each with its true-sequential groups.
std::vector<LayerSpec> build_layer_specs(const nlohmann::json& root, const Keys& keys, const ModelConfig& config,
                                         const LayerSettings& settings);

}  // namespace gptq::model::detail
