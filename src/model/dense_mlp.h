#pragma once
// The dense gated MLP of a decoder block (MlpKind::kDenseGated, private to
// model/): down_proj(act(gate_proj(n2)) * up_proj(n2)), gate and up as two
// linears or one fused [gate | up] linear (Phi-3).
#include <ATen/core/Tensor.h>

#include "model/block.h"

namespace gptq::model::detail {

// act(gate(normed)) * up(normed) [rows, T, intermediate_size], computed in
// `out` when given (a slice of a held activation for all rows). Peaks at two
// [rows, T, intermediate] tensors (fused: one of twice the width).
at::Tensor mlp_hidden(const Block& block, const at::Tensor& normed, at::Tensor out = {});
// down_proj(act), then Gemma's post-feedforward norm (before the residual add).
at::Tensor mlp_output(const Block& block, const at::Tensor& act);

}  // namespace gptq::model::detail
