// The sparse MLP's output (see sparse_mlp.h and moe.h for the math).
#include "model/sparse_mlp.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "model/row_chunks.h"

namespace gptq::model::detail {
namespace {

at::Tensor expert_output(const Block& block, int expert, const at::Tensor& x) {
  const LayerSpec& layer = block.layer;
  return linear(block.weights, layer.expert_linear(expert, layer.moe.down), expert_hidden(block, expert, x));
}

// sigmoid(shared_expert_gate(x)) * shared_expert(x), or ungated (DeepSeek-V3), x [n, H].
at::Tensor shared_output(const Block& block, const at::Tensor& x) {
  const LayerSpec& layer = block.layer;
  at::Tensor y = linear(block.weights, layer.shared_linear(layer.moe.down), shared_hidden(block, x));
  if (layer.moe.shared_gate.empty()) return y;
  return y.mul_(at::sigmoid(linear(block.weights, layer.moe.shared_gate, x)));
}

}  // namespace

at::Tensor moe_rows(const Block& block, const at::Tensor& normed) {
  const at::Tensor x = normed.reshape({-1, normed.size(-1)});
  const ExpertRouting routing = route_tokens(block.layer, block.weights, x);
  return moe_output(block, x, routing, std::max<int64_t>(1, x.size(0))).view(normed.sizes());
}

at::Tensor moe_output(const Block& block, const at::Tensor& x, const ExpertRouting& routing, int64_t token_step) {
  at::Tensor sum = at::zeros(x.sizes(), x.options().dtype(at::kFloat));
  for (int expert = 0; expert < block.layer.n_experts; ++expert) {
    const at::Tensor tokens = routing.expert_tokens(expert);
    const at::Tensor weights = routing.expert_weights(expert);
    for_spans(routing.count(expert), token_step, [&](int64_t start, int64_t count) {
      const at::Tensor span = tokens.narrow(0, start, count);
      const at::Tensor y = expert_output(block, expert, x.index_select(0, span));
      sum.index_add_(0, span, scale_by_routing(y, weights.narrow(0, start, count)));
    });
  }
  at::Tensor out = sum.to(x.scalar_type());
  sum.reset();
  if (block.layer.shared_intermediate_size > 0) {
    for_spans(x.size(0), token_step, [&](int64_t start, int64_t count) {
      out.narrow(0, start, count).add_(shared_output(block, x.narrow(0, start, count)));
    });
  }
  return out;
}

at::Tensor expert_hidden(const Block& block, int expert, const at::Tensor& x) {
  const LayerSpec& layer = block.layer;
  return gated_hidden(block.weights, layer.expert_linear(expert, layer.moe.gate),
                      layer.expert_linear(expert, layer.moe.up), x, layer.mlp.activation);
}

at::Tensor shared_hidden(const Block& block, const at::Tensor& x) {
  const LayerSpec& layer = block.layer;
  return gated_hidden(block.weights, layer.shared_linear(layer.moe.gate), layer.shared_linear(layer.moe.up), x,
                      layer.mlp.activation);
}

}  // namespace gptq::model::detail
