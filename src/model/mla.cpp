// Multi-head latent attention (see mla.h), op for op as DeepseekV3Attention.
#include "gptq/model/mla.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"
#include "gptq/model/norm.h"
#include "gptq/model/rope.h"

namespace gptq::model {
namespace {

at::Tensor project(const BlockWeights& weights, const std::string& name, const at::Tensor& x) {
  const at::Tensor* bias = weights.find(name + ".bias");
  return at::linear(x, weights.at(name + ".weight"), bias ? *bias : at::Tensor());
}

at::Tensor latent_norm(const ModelConfig& config, const NormSpec& spec, const BlockWeights& weights,
                       const at::Tensor& x) {
  return apply_norm(spec.kind, x, weights.at(spec.name + ".weight"), spec.eps.value_or(config.rms_norm_eps));
}

at::Tensor rotate(const LayerSpec& layer, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return layer.mla.rope_interleave ? apply_rotary_interleaved(x, cos, sin) : apply_rotary(x, cos, sin);
}

}  // namespace

at::Tensor mla_query_latent(const ModelConfig& config, const LayerSpec& layer, const BlockWeights& weights,
                            const at::Tensor& x) {
  const MlaSpec& mla = layer.attention.mla;
  return latent_norm(config, mla.q_a_norm, weights, project(weights, mla.q_a_proj, x));
}

at::Tensor mla_kv_latent(const ModelConfig& config, const LayerSpec& layer, const BlockWeights& weights,
                         const at::Tensor& x) {
  const MlaSpec& mla = layer.attention.mla;
  const at::Tensor compressed = project(weights, mla.kv_a_proj, x);
  return latent_norm(config, mla.kv_a_norm, weights, compressed.narrow(-1, 0, layer.mla.kv_lora_rank));
}

at::Tensor mla_attention(const ModelConfig& config, const LayerSpec& layer, const BlockWeights& weights,
                         const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  GPTQ_ASSERT(layer.attention.kind == AttentionKind::kMla && x.dim() == 3, "mla_attention needs an MLA layer");
  const MlaSpec& mla = layer.attention.mla;
  const MlaShape& shape = layer.mla;
  const int64_t n_rows = x.size(0);
  const int64_t n_tokens = x.size(1);
  const int64_t n_heads = config.n_heads;
  const int64_t nope = shape.qk_nope_head_dim;
  const int64_t rope = shape.qk_rope_head_dim;

  at::Tensor q = shape.q_lora_rank > 0 ? project(weights, mla.q_b_proj, mla_query_latent(config, layer, weights, x))
                                       : project(weights, layer.attention.q_proj, x);
  q = q.view({n_rows, n_tokens, n_heads, shape.qk_head_dim()}).transpose(1, 2);
  const at::Tensor q_rot = rotate(layer, q.narrow(-1, nope, rope), cos, sin);
  const at::Tensor query = at::cat({q.narrow(-1, 0, nope), q_rot}, -1);
  q.reset();

  const at::Tensor compressed = project(weights, mla.kv_a_proj, x);
  const at::Tensor kv_latent =
      latent_norm(config, mla.kv_a_norm, weights, compressed.narrow(-1, 0, shape.kv_lora_rank));
  // One rotated key head, shared by every head.
  const at::Tensor k_rot = rotate(layer, compressed.narrow(-1, shape.kv_lora_rank, rope).unsqueeze(1), cos, sin);
  const at::Tensor kv = project(weights, mla.kv_b_proj, kv_latent)
                            .view({n_rows, n_tokens, n_heads, nope + shape.v_head_dim})
                            .transpose(1, 2);
  const at::Tensor key = at::cat({kv.narrow(-1, 0, nope), k_rot.expand({n_rows, n_heads, n_tokens, rope})}, -1);
  const at::Tensor value = kv.narrow(-1, nope, shape.v_head_dim);
  const at::Tensor out = at::scaled_dot_product_attention(query, key, value, std::nullopt, 0.0, /*is_causal=*/true,
                                                          layer.attention_scale);
  return out.transpose(1, 2).reshape({n_rows, n_tokens, n_heads * shape.v_head_dim});
}

at::Tensor apply_rotary_interleaved(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t dim = x.size(-1);
  const at::Tensor c = cos.narrow(-1, 0, dim / 2);
  const at::Tensor s = sin.narrow(-1, 0, dim / 2);
  const at::Tensor even = x.slice(-1, 0, dim, 2);
  const at::Tensor odd = x.slice(-1, 1, dim, 2);
  return at::cat({even * c - odd * s, odd * c + even * s}, -1);
}

}  // namespace gptq::model
