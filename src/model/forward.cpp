// The model's forward entry points: embedding, one decoder block, final norm
// and logits. Numerics follow transformers' Llama family (sdpa attention) op
// for op. The block's math lives in its stages (attention.cpp, dense_mlp.cpp,
// sparse_mlp.cpp, over the shared pieces of block.cpp); this file picks the
// driver: every chunk of rows through the whole block, or, with an observer,
// stage by stage (observed_forward.cpp, observed_moe.cpp).
#include "gptq/model/forward.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gptq/core/error.h"
#include "gptq/model/norm.h"
#include "model/attention.h"
#include "model/block.h"
#include "model/dense_mlp.h"
#include "model/observed_forward.h"
#include "model/sparse_mlp.h"

namespace gptq::model {
namespace {

// Rows x of the batch [rows, T, H] through the whole block.
at::Tensor forward_rows(const detail::Block& block, const at::Tensor& x) {
  using namespace detail;
  at::Tensor h = x + attention_output(block, attention_rows(block, attention_input(block, x)));
  if (block.layer.is_moe()) {
    h.add_(moe_rows(block, mlp_input(block, h)));
  } else {
    h.add_(mlp_output(block, mlp_hidden(block, mlp_input(block, h))));
  }
  return h;
}

// Rows per chunk so one chunk's activations stay near 256 MiB (fp32 widths).
int64_t auto_batch_chunk(const ModelConfig& config, const LayerSpec& layer, int64_t n_tokens) {
  constexpr double kBudgetBytes = 256.0 * 1024 * 1024;
  // MLA: query, key and the kv_b_proj output per head.
  const double attention_width =
      layer.attention.kind == AttentionKind::kMla
          ? static_cast<double>(config.n_heads) * (2 * layer.mla.qk_head_dim() + layer.mla.qk_nope_head_dim +
                                                   layer.mla.v_head_dim) / 3.0
          : static_cast<double>(config.n_heads * config.head_dim);
  const double per_row = static_cast<double>(n_tokens) * 4.0 *
                         (3.0 * layer.intermediate_size + 4.0 * config.hidden_size + 3.0 * attention_width);
  return std::max<int64_t>(1, static_cast<int64_t>(kBudgetBytes / per_row));
}

// The stage-by-stage driver visits the sites in block order.
void check_group_order(const LayerSpec& layer) {
  InputSite previous = InputSite::kAttentionInput;
  for (const auto& group : layer.groups) {
    GPTQ_ASSERT(!group.linears.empty(), "empty sequential group in layer ", layer.index);
    GPTQ_ASSERT(group.site >= previous, "sequential groups out of block order in layer ", layer.index);
    previous = group.site;
  }
}

}  // namespace

at::Tensor block_forward(const ModelConfig& config, BlockWeights& weights, const at::Tensor& hidden,
                         const RotaryCache& rope, GroupObserver* observer, const BlockOptions& options,
                         BlockStats* stats) {
  GPTQ_CHECK(hidden.dim() == 3 && hidden.size(2) == config.hidden_size, "block input must be [B, T, ",
             config.hidden_size, "], got ", hidden.sizes());
  GPTQ_CHECK(weights.layer >= 0 && weights.layer < config.n_layers, "block weights of layer ",
             weights.layer, " do not belong to a model of ", config.n_layers, " layers");
  const LayerSpec& layer = config.layer(weights.layer);
  check_group_order(layer);
  const int64_t n_rows = hidden.size(0);
  const int64_t chunk =
      options.batch_chunk > 0 ? options.batch_chunk : auto_batch_chunk(config, layer, hidden.size(1));
  const detail::Block block{config, layer, weights, rope};
  if (observer != nullptr) {
    BlockStats local;
    return detail::forward_observed(block, hidden, *observer, options, chunk, stats ? *stats : local);
  }
  if (n_rows <= chunk) return forward_rows(block, hidden);
  std::vector<at::Tensor> parts;
  for (int64_t row_start = 0; row_start < n_rows; row_start += chunk) {
    parts.push_back(forward_rows(block, hidden.narrow(0, row_start, std::min(chunk, n_rows - row_start))));
  }
  return at::cat(parts, 0);
}

at::Tensor embed(const ModelConfig& config, const at::Tensor& embedding, const at::Tensor& ids) {
  at::Tensor hidden = at::embedding(embedding, ids.to(embedding.device(), at::kLong));
  if (!config.arch.scale_embeddings) return hidden;
  // transformers rounds the scale to the weights' dtype before multiplying.
  const at::Tensor scale = at::scalar_tensor(std::pow(static_cast<double>(config.hidden_size), 0.5),
                                             embedding.options().device(at::kCPU)).to(embedding.scalar_type());
  return hidden.mul_(scale.item());
}

at::Tensor final_norm_and_logits(const ModelConfig& config, const HeadWeights& head,
                                 const at::Tensor& hidden) {
  at::Tensor logits =
      at::linear(apply_norm(config.arch.final_norm_kind, hidden, head.final_norm, config.rms_norm_eps), head.lm_head);
  if (config.final_logit_softcap <= 0) return logits;
  const double cap = config.final_logit_softcap;
  // Out of place: see attention.cpp's softcapped_attention.
  return at::mul(at::tanh(at::div(logits, cap)), cap);
}

}  // namespace gptq::model
