// The pieces every stage of the block shares (see block.h).
#include "model/block.h"

#include <ATen/ATen.h>

#include "gptq/model/norm.h"

namespace gptq::model::detail {

at::Tensor linear(const BlockWeights& weights, const std::string& name, const at::Tensor& x) {
  const at::Tensor* bias = weights.find(name + ".bias");
  return at::linear(x, weights.at(name + ".weight"), bias ? *bias : at::Tensor());
}

at::Tensor norm(const Block& block, const NormSpec& spec, const at::Tensor& x) {
  return apply_norm(spec.kind, x, block.weights.at(spec.name + ".weight"),
                    spec.eps.value_or(block.config.rms_norm_eps));
}

at::Tensor attention_input(const Block& block, const at::Tensor& x) {
  return norm(block, block.layer.input_norm, x);
}

at::Tensor mlp_input(const Block& block, const at::Tensor& h) {
  return norm(block, block.layer.post_attention_norm, h);
}

}  // namespace gptq::model::detail
