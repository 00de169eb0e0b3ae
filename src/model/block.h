#pragma once
// One decoder layer as the block's stages see it (private to model/): the
// config, the layer's LayerSpec, its weights and the rotary tables, plus the
// pieces every stage shares. The stages (attention.h, dense_mlp.h,
// sparse_mlp.h) are functions of a Block and the rows they are given; they
// keep no state, so the plain and the observed drivers run the same math.
#include <ATen/core/Tensor.h>

#include <string>

#include "gptq/model/config.h"
#include "gptq/model/rope.h"
#include "gptq/model/weights.h"

namespace gptq::model::detail {

struct Block {
  const ModelConfig& config;
  const LayerSpec& layer;
  BlockWeights& weights;  // an observer may replace linear weights between stages
  const RotaryCache& rope;
};

// x W^T, plus "<name>.bias" when the block has one.
at::Tensor linear(const BlockWeights& weights, const std::string& name, const at::Tensor& x);
// The norm `spec` names, with its own eps or else config.json's rms_norm_eps.
at::Tensor norm(const Block& block, const NormSpec& spec, const at::Tensor& x);
// input_layernorm(x): what the attention's input projections read.
at::Tensor attention_input(const Block& block, const at::Tensor& x);
// post_attention_layernorm(h) (Gemma: pre_feedforward_layernorm): the MLP's input.
at::Tensor mlp_input(const Block& block, const at::Tensor& h);

}  // namespace gptq::model::detail
