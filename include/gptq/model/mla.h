#pragma once
// Multi-head latent attention (DeepSeek-V3, AttentionKind::kMla), as
// transformers' DeepseekV3Attention computes it (sdpa), for one layer:
//   q        = q_proj(x), or q_b_proj(q_a_layernorm(q_a_proj(x)))   [B, h, T, nope + rope]
//   latent   = kv_a_proj_with_mqa(x) = [kv (kv_lora_rank) | k_rope (rope)]
//   k_nope,v = split(kv_b_proj(kv_a_layernorm(kv)))                [B, h, T, nope], [B, h, T, v]
//   q_rope, k_rope rotated (one k_rope head shared by every head; interleaved
//   pairs when rope_interleave), key = [k_nope | k_rope], query = [q_nope | q_rope]
//   out      = causal sdpa(query, key, v, scale = LayerSpec::attention_scale)
// with nope = qk_nope_head_dim, rope = qk_rope_head_dim, v = v_head_dim.
// The two latent norms use their own eps (NormSpec::eps, 1e-6).
//
// Shapes: x [B, T, hidden] in the compute dtype; cos/sin [T, rope] (the
// rotate_half layout: frequencies repeated twice). Weights as BlockWeights.
#include <ATen/core/Tensor.h>

#include "gptq/model/config.h"
#include "gptq/model/weights.h"

namespace gptq::model {

// q_b_proj's input: q_a_layernorm(q_a_proj(x)) [B, T, q_lora_rank].
at::Tensor mla_query_latent(const ModelConfig& config, const LayerSpec& layer, const BlockWeights& weights,
                            const at::Tensor& x);
// kv_b_proj's input: kv_a_layernorm(kv_a_proj_with_mqa(x)[..., :kv_lora_rank]) [B, T, kv_lora_rank].
at::Tensor mla_kv_latent(const ModelConfig& config, const LayerSpec& layer, const BlockWeights& weights,
                         const at::Tensor& x);
// o_proj's input [B, T, n_heads * v_head_dim].
at::Tensor mla_attention(const ModelConfig& config, const LayerSpec& layer, const BlockWeights& weights,
                         const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// DeepSeek's interleaved RoPE (transformers' apply_rotary_pos_emb_interleave):
// x [..., T, d] holds pairs (x0, x1), (x2, x3), ...; with c, s the first d/2
// columns of cos/sin [T, d], returns [x_even * c - x_odd * s | x_odd * c + x_even * s].
at::Tensor apply_rotary_interleaved(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace gptq::model
