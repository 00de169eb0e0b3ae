// Router, grouping of tokens by expert, and the gated MLP pieces (see moe.h for the math).
#include "gptq/model/moe.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"

namespace gptq::model {

at::Tensor ExpertRouting::expert_tokens(int expert) const {
  return tokens.narrow(0, offsets[expert], count(expert));
}

at::Tensor ExpertRouting::expert_weights(int expert) const {
  return weights.narrow(0, offsets[expert], count(expert));
}

ExpertRouting route_tokens(const LayerSpec& layer, const BlockWeights& weights, const at::Tensor& x) {
  GPTQ_ASSERT(layer.is_moe() && x.dim() == 2, "route_tokens needs a sparse layer and x [n, hidden]");
  const at::Tensor logits = at::linear(x, weights.at(layer.moe.router + ".weight"));
  const at::Tensor probs = at::softmax(logits.to(at::kFloat), -1);
  auto [top_weight, top_index] = at::topk(probs, layer.top_k, -1);
  if (layer.renormalize_top_k) top_weight = top_weight / top_weight.sum(-1, /*keepdim=*/true);
  if (!layer.moe.fp32_routing_weights) top_weight = top_weight.to(x.scalar_type());

  ExpertRouting routing;
  routing.n_tokens = x.size(0);
  routing.top_k = layer.top_k;
  routing.top_index = top_index;
  routing.top_weight = top_weight;
  const at::Tensor flat_expert = top_index.reshape(-1);
  // Stable: tokens stay ascending within an expert.
  const at::Tensor order = std::get<1>(flat_expert.sort(/*stable=*/true, 0, /*descending=*/false));
  routing.tokens = at::floor_divide(order, layer.top_k);
  routing.weights = top_weight.reshape(-1).index_select(0, order);
  const at::Tensor counts = at::bincount(flat_expert, {}, layer.n_experts).to(at::kCPU);
  routing.offsets.assign(layer.n_experts + 1, 0);
  const int64_t* count_data = counts.data_ptr<int64_t>();
  for (int64_t expert = 0; expert < layer.n_experts; ++expert) {
    routing.offsets[expert + 1] = routing.offsets[expert] + count_data[expert];
  }
  return routing;
}

at::Tensor gated_hidden(const BlockWeights& weights, const std::string& gate, const std::string& up,
                        const at::Tensor& x, Activation activation) {
  at::Tensor hidden = at::linear(x, weights.at(gate + ".weight"));
  activate_(activation, hidden);
  return hidden.mul_(at::linear(x, weights.at(up + ".weight")));
}

at::Tensor& activate_(Activation activation, at::Tensor& gate) {
  switch (activation) {
    case Activation::kSilu: return at::silu_(gate);
    case Activation::kGeluTanh: return gate.copy_(at::gelu(gate, "tanh"));
    case Activation::kGelu: return gate.copy_(at::gelu(gate));
  }
  GPTQ_ASSERT(false, "unknown activation");
  return gate;
}

at::Tensor scale_by_routing(const at::Tensor& y, const at::Tensor& routing_weights) {
  return (y * routing_weights.unsqueeze(1)).to(at::kFloat);
}

}  // namespace gptq::model
