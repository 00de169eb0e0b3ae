#pragma once
// The attention half of a decoder block (private to model/), as transformers'
// sdpa attention computes it: q/k/v projections (separate or fused), the
// optional q/k norms and OLMoE's clamp, RoPE, causal (optionally sliding
// window) GQA attention or Gemma-2's soft-capped eager attention; MLA layers
// defer to mla.h.
#include <ATen/core/Tensor.h>

#include "model/block.h"

namespace gptq::model::detail {

// input_layernorm's output [B, T, H] -> o_proj's input [B, T, n_heads * head_dim]
// (MLA: [B, T, n_heads * v_head_dim]). InputError when T exceeds the rotary cache.
at::Tensor attention_rows(const Block& block, const at::Tensor& normed);
// o_proj(attended), then Gemma's post-attention norm (before the residual add).
at::Tensor attention_output(const Block& block, const at::Tensor& attended);

}  // namespace gptq::model::detail
