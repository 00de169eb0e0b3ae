#pragma once
// The sparse (MoE) MLP of a decoder block (MlpKind::kSparseMoe, private to
// model/): the routed experts' weighted sum, summed in fp32 and rounded once,
// plus the shared expert. The router and the expert math are moe.h's.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "gptq/model/moe.h"
#include "model/block.h"

namespace gptq::model::detail {

// The sparse MLP's output for normed [rows, T, H], all tokens in one span.
at::Tensor moe_rows(const Block& block, const at::Tensor& normed);
// The sparse MLP's output [n, H] for x [n, H] routed as `routing`; each expert
// (and the shared one) runs on spans of at most `token_step` of its tokens.
at::Tensor moe_output(const Block& block, const at::Tensor& x, const ExpertRouting& routing, int64_t token_step);
// act(gate(x)) * up(x) of routed expert `expert` / of the shared expert, x [n, H].
at::Tensor expert_hidden(const Block& block, int expert, const at::Tensor& x);
at::Tensor shared_hidden(const Block& block, const at::Tensor& x);

}  // namespace gptq::model::detail
