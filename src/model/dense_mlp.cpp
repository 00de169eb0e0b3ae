// The dense gated MLP (see dense_mlp.h).
#include "model/dense_mlp.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"
#include "gptq/model/moe.h"

namespace gptq::model::detail {

// Gate's own output is dropped before up's exists, so a chunk peaks at two
// [rows, T, inter] tensors.
at::Tensor mlp_hidden(const Block& block, const at::Tensor& normed, at::Tensor out) {
  const MlpSpec& mlp = block.layer.mlp;
  GPTQ_ASSERT(mlp.kind == MlpKind::kDenseGated);
  if (!mlp.gate_up_proj.empty()) {
    const int64_t width = block.layer.intermediate_size;
    const at::Tensor fused = linear(block.weights, mlp.gate_up_proj, normed);
    at::Tensor gate = fused.narrow(-1, 0, width);
    at::Tensor gated = out.defined() ? out.copy_(gate) : gate.clone();
    return activate_(mlp.activation, gated).mul_(fused.narrow(-1, width, width));
  }
  at::Tensor gate = linear(block.weights, mlp.gate_proj, normed);
  if (out.defined()) gate = out.copy_(gate);
  at::Tensor& gated = activate_(mlp.activation, gate);
  return gated.mul_(linear(block.weights, mlp.up_proj, normed));
}

at::Tensor mlp_output(const Block& block, const at::Tensor& act) {
  at::Tensor out = linear(block.weights, block.layer.mlp.down_proj, act);
  return block.layer.mlp_output_norm.present() ? norm(block, block.layer.mlp_output_norm, out) : out;
}

}  // namespace gptq::model::detail
