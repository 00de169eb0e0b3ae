// Router, grouping of tokens by expert, and the gated MLP pieces (see moe.h for the math).
#include "gptq/model/moe.h"

#include <ATen/ATen.h>

#include <limits>
#include <utility>

#include "gptq/core/error.h"

namespace gptq::model {

at::Tensor ExpertRouting::expert_tokens(int expert) const {
  return tokens.narrow(0, offsets[expert], count(expert));
}

at::Tensor ExpertRouting::expert_weights(int expert) const {
  return weights.narrow(0, offsets[expert], count(expert));
}

namespace {

// Softmax over the router logits, top-k, optional renormalisation.
std::pair<at::Tensor, at::Tensor> softmax_top_k(const LayerSpec& layer, const BlockWeights& weights,
                                                const at::Tensor& x) {
  const at::Tensor logits = at::linear(x, weights.at(layer.moe.router + ".weight"));
  const at::Tensor probs = at::softmax(logits.to(at::kFloat), -1);
  auto [top_weight, top_index] = at::topk(probs, layer.top_k, -1);
  if (layer.renormalize_top_k) top_weight = top_weight / top_weight.sum(-1, /*keepdim=*/true);
  return {top_weight, top_index};
}

// DeepseekV3TopkRouter op for op, in fp32 (see RouterKind::kSigmoidGroupLimited).
std::pair<at::Tensor, at::Tensor> group_limited_top_k(const LayerSpec& layer, const BlockWeights& weights,
                                                      const at::Tensor& x) {
  const int64_t n_experts = layer.n_experts;
  const int64_t group_size = n_experts / layer.n_group;
  const at::Tensor logits =
      at::linear(x.to(at::kFloat), weights.at(layer.moe.router + ".weight").to(at::kFloat));
  const at::Tensor scores = logits.sigmoid();
  at::Tensor choice = scores + weights.at(layer.moe.router_bias).to(at::kFloat);
  const at::Tensor group_scores =
      std::get<0>(choice.view({-1, layer.n_group, group_size}).topk(2, -1)).sum(-1);
  const at::Tensor group_idx = std::get<1>(at::topk(group_scores, layer.topk_group, -1, true, /*sorted=*/false));
  const at::Tensor group_mask = at::zeros_like(group_scores).scatter_(1, group_idx, 1);
  const at::Tensor score_mask =
      group_mask.unsqueeze(-1).expand({-1, layer.n_group, group_size}).reshape({-1, n_experts});
  choice = choice.masked_fill(score_mask.to(at::kBool).logical_not(), -std::numeric_limits<double>::infinity());
  const at::Tensor top_index = std::get<1>(at::topk(choice, layer.top_k, -1, true, /*sorted=*/false));
  at::Tensor top_weight = scores.gather(1, top_index);
  if (layer.renormalize_top_k) top_weight = top_weight / (top_weight.sum(-1, /*keepdim=*/true) + 1e-20);
  // Out of place: the scalar is not rounded first (see attention.cpp's softcapped_attention).
  return {at::mul(top_weight, layer.routed_scaling_factor), top_index};
}

}  // namespace

ExpertRouting route_tokens(const LayerSpec& layer, const BlockWeights& weights, const at::Tensor& x) {
  GPTQ_ASSERT(layer.is_moe() && x.dim() == 2, "route_tokens needs a sparse layer and x [n, hidden]");
  auto [top_weight, top_index] = layer.moe.router_kind == RouterKind::kSigmoidGroupLimited
                                     ? group_limited_top_k(layer, weights, x)
                                     : softmax_top_k(layer, weights, x);
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
