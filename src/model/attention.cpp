// Causal GQA attention op for op as transformers' sdpa path (see attention.h).
#include "model/attention.h"

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <limits>

#include "gptq/core/error.h"
#include "gptq/model/mla.h"

namespace gptq::model::detail {
namespace {

// q, k and v projections of x [B, T, H]: three linears, or views of one
// fused [q | k | v] output (Phi-3).
std::array<at::Tensor, 3> qkv_projections(const Block& block, const at::Tensor& x) {
  const AttentionSpec& attention = block.layer.attention;
  if (attention.qkv_proj.empty()) {
    return {linear(block.weights, attention.q_proj, x), linear(block.weights, attention.k_proj, x),
            linear(block.weights, attention.v_proj, x)};
  }
  const int64_t q_width = block.config.n_heads * block.config.head_dim;
  const int64_t kv_width = block.config.n_kv_heads * block.config.head_dim;
  const at::Tensor fused = linear(block.weights, attention.qkv_proj, x);
  return {fused.narrow(-1, 0, q_width), fused.narrow(-1, q_width, kv_width),
          fused.narrow(-1, q_width + kv_width, kv_width)};
}

// projection [B, T, heads * head_dim] -> (optional norm, optional clamp) -> [B, heads, T, head_dim].
at::Tensor project_heads(const Block& block, at::Tensor out, int64_t n_heads, const NormSpec* head_norm) {
  const AttentionSpec& attention = block.layer.attention;
  const int64_t n_rows = out.size(0);
  const int64_t n_tokens = out.size(1);
  if (head_norm != nullptr && attention.qk_norm == QkNorm::kWholeProjection) out = norm(block, *head_norm, out);
  // In place: `out` is this projection's own tensor (or its view of the fused one).
  if (block.layer.clip_qkv > 0) out.clamp_(-block.layer.clip_qkv, block.layer.clip_qkv);
  out = out.reshape({n_rows, n_tokens, n_heads, block.config.head_dim});
  if (head_norm != nullptr && attention.qk_norm == QkNorm::kPerHead) out = norm(block, *head_norm, out);
  return out.transpose(1, 2);
}

// Key/value heads [B, n_kv_heads, T, head_dim] repeated for every query head
// (transformers' repeat_kv), for the paths sdpa's enable_gqa does not cover.
at::Tensor repeat_kv(const ModelConfig& config, const at::Tensor& t) {
  const int64_t n_rows = t.size(0);
  const int64_t n_tokens = t.size(2);
  const int64_t n_rep = config.n_heads / config.n_kv_heads;
  return t.unsqueeze(2).expand({n_rows, config.n_kv_heads, n_rep, n_tokens, config.head_dim})
      .reshape({n_rows, config.n_heads, n_tokens, config.head_dim});
}

// [T, T] int64: query position minus key position.
at::Tensor token_offsets(int64_t n_tokens, c10::Device device) {
  at::Tensor positions = at::arange(n_tokens, at::TensorOptions().device(device).dtype(at::kLong));
  return positions.unsqueeze(1) - positions.unsqueeze(0);
}

// Gemma-2's eager attention, op for op (sdpa has no soft-cap):
// softmax_fp32(cap * tanh(q k^T * scale / cap) + mask) v, in the compute dtype.
at::Tensor softcapped_attention(const Block& block, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                double scale, int64_t window) {
  // Out-of-place scalar ops on purpose: in-place mul_(Scalar) rounds the
  // scalar to bf16 first, transformers' `t * scale` does not.
  const double cap = block.layer.attention_softcap;
  at::Tensor scores = at::mul(at::matmul(q, repeat_kv(block.config, k).transpose(2, 3)), scale);
  scores = at::mul(at::tanh(at::div(scores, cap)), cap);
  at::Tensor offset = token_offsets(q.size(2), q.device());
  at::Tensor hidden_keys = offset.lt(0);
  if (window > 0) hidden_keys = hidden_keys.logical_or(offset.ge(window));
  scores.masked_fill_(hidden_keys, -std::numeric_limits<double>::infinity());
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  scores.reset();
  return at::matmul(probs, repeat_kv(block.config, v));
}

// q [B, heads, T, d], k/v [B, kv_heads, T, d] -> [B, heads, T, d]: causal,
// within the layer's sliding window when it has one, soft-capped for Gemma-2.
at::Tensor attend(const Block& block, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const ModelConfig& config = block.config;
  const LayerSpec& layer = block.layer;
  const int64_t n_tokens = q.size(2);
  const double scale = layer.attention_scale > 0 ? layer.attention_scale
                                                 : std::pow(static_cast<double>(config.head_dim), -0.5);
  const int64_t n_rep = config.n_heads / config.n_kv_heads;
  const int64_t window = layer.sliding_window;
  if (layer.attention_softcap > 0) return softcapped_attention(block, q, k, v, scale, window);
  if (window == 0 || n_tokens <= window) {
    return at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, /*is_causal=*/true, scale,
                                            /*enable_gqa=*/n_rep > 1);
  }
  // Sliding window (as transformers' mask): key j visible from query i iff i - window < j <= i.
  at::Tensor offset = token_offsets(n_tokens, q.device());
  at::Tensor mask = offset.ge(0).logical_and(offset.lt(window));
  return at::scaled_dot_product_attention(q, repeat_kv(config, k), repeat_kv(config, v), mask, 0.0, false, scale);
}

}  // namespace

at::Tensor attention_rows(const Block& block, const at::Tensor& x) {
  const ModelConfig& config = block.config;
  const LayerSpec& layer = block.layer;
  const int64_t n_rows = x.size(0);
  const int64_t n_tokens = x.size(1);
  GPTQ_CHECK(n_tokens <= block.rope.max_positions(), "sequence of ", n_tokens,
             " tokens is longer than the rotary cache (", block.rope.max_positions(), ")");
  const AttentionSpec& attention = layer.attention;
  at::Tensor cos = block.rope.cos(layer.rope_table).narrow(0, 0, n_tokens);
  at::Tensor sin = block.rope.sin(layer.rope_table).narrow(0, 0, n_tokens);
  if (attention.kind == AttentionKind::kMla) return mla_attention(config, layer, block.weights, x, cos, sin);
  const bool qk_norm = attention.qk_norm != QkNorm::kNone;
  auto [q_lin, k_lin, v_lin] = qkv_projections(block, x);
  at::Tensor q = project_heads(block, std::move(q_lin), config.n_heads, qk_norm ? &attention.q_norm : nullptr);
  at::Tensor k = project_heads(block, std::move(k_lin), config.n_kv_heads, qk_norm ? &attention.k_norm : nullptr);
  at::Tensor v = project_heads(block, std::move(v_lin), config.n_kv_heads, nullptr);
  q = apply_rotary(q, cos, sin);
  k = apply_rotary(k, cos, sin);
  const at::Tensor out = attend(block, q, k, v);
  return out.transpose(1, 2).reshape({n_rows, n_tokens, config.n_heads * config.head_dim});
}

at::Tensor attention_output(const Block& block, const at::Tensor& attended) {
  at::Tensor out = linear(block.weights, block.layer.attention.o_proj, attended);
  return block.layer.attention_output_norm.present() ? norm(block, block.layer.attention_output_norm, out) : out;
}

}  // namespace gptq::model::detail
