// The stage-by-stage block forward (see observed_forward.h). The sparse MLP's
// stages are observed_moe.cpp's.
#include "model/observed_forward.h"

#include <ATen/ATen.h>

#include <utility>

#include "gptq/model/mla.h"
#include "model/attention.h"
#include "model/dense_mlp.h"
#include "model/group_feed.h"
#include "model/observed_moe.h"
#include "model/row_chunks.h"

namespace gptq::model::detail {
namespace {

// Chunks of an all-row tensor; reads `t` when called, so it follows a
// reassigned tensor.
ChunkFn chunks_of(const at::Tensor& t) {
  return [&t](int64_t start, int64_t count) { return rows(t, start, count); };
}

// The attention half: its input sites (MLA: and the two latents) and its
// output site are observed; returns h = x + attention_output for all rows.
at::Tensor observe_attention(const Block& block, const RowChunks& chunks, const at::Tensor& x,
                             GroupObserver& observer) {
  const int64_t n_rows = x.size(0);
  at::Tensor normed = chunks.map_chunks(n_rows, [&](int64_t start, int64_t count) {
    return attention_input(block, rows(x, start, count));
  });
  observe_site(block, chunks, InputSite::kAttentionInput, observer, n_rows, chunks_of(normed));
  // MLA's latents, from the (by now final) input projections, one chunk at a time.
  observe_site(block, chunks, InputSite::kQueryLatent, observer, n_rows, [&](int64_t start, int64_t count) {
    return mla_query_latent(block.config, block.layer, block.weights, rows(normed, start, count));
  });
  observe_site(block, chunks, InputSite::kKvLatent, observer, n_rows, [&](int64_t start, int64_t count) {
    return mla_kv_latent(block.config, block.layer, block.weights, rows(normed, start, count));
  });
  at::Tensor attended = chunks.map_chunks(n_rows, [&](int64_t start, int64_t count) {
    return attention_rows(block, rows(normed, start, count));
  });
  normed.reset();
  observe_site(block, chunks, InputSite::kAttentionOutput, observer, n_rows, chunks_of(attended));
  at::Tensor h = chunks.all_rows(x.sizes(), x.options());
  chunks.for_chunks(n_rows, [&](int64_t start, int64_t count) {
    at::Tensor out = rows(h, start, count);
    at::add_out(out, rows(x, start, count), attention_output(block, rows(attended, start, count)));
  });
  return h;
}

// The dense MLP: its input and hidden sites are observed, then its output
// added to h. The activation feeds down_proj's Hessian and then the output:
// held for all rows, or recomputed from the (by then final) gate/up weights.
void observe_dense_mlp(const Block& block, const RowChunks& chunks, at::Tensor normed, at::Tensor& h,
                       GroupObserver& observer, const BlockOptions& options, BlockStats& stats) {
  const int64_t n_rows = normed.size(0);
  observe_site(block, chunks, InputSite::kMlpInput, observer, n_rows, chunks_of(normed));
  const bool observes_activation = !block.layer.groups_at(InputSite::kMlpHidden).empty();
  at::Tensor held;
  if (observes_activation && options.max_held_bytes > 0 && stats.mlp_hidden_bytes <= options.max_held_bytes) {
    held = chunks.all_rows({n_rows, normed.size(1), block.layer.intermediate_size}, h.options());
  }
  stats.mlp_recomputed = observes_activation && !held.defined();
  observe_site(block, chunks, InputSite::kMlpHidden, observer, n_rows, [&](int64_t start, int64_t count) {
    return mlp_hidden(block, rows(normed, start, count), held.defined() ? rows(held, start, count) : at::Tensor());
  });
  if (held.defined()) normed.reset();
  chunks.for_chunks(n_rows, [&](int64_t start, int64_t count) {
    at::Tensor act = held.defined() ? rows(held, start, count) : mlp_hidden(block, rows(normed, start, count));
    rows(h, start, count).add_(mlp_output(block, act));
  });
}

}  // namespace

at::Tensor forward_observed(const Block& block, const at::Tensor& x, GroupObserver& observer,
                            const BlockOptions& options, int64_t rows_per_chunk, BlockStats& stats) {
  const int64_t n_rows = x.size(0);
  const int64_t n_tokens = x.size(1);
  const RowChunks chunks(rows_per_chunk, x.device().is_cpu() ? options.offload_dir : std::filesystem::path());
  stats.rows_per_chunk = rows_per_chunk;
  stats.sparse_mlp = false;
  stats.n_chunks = (n_rows + rows_per_chunk - 1) / rows_per_chunk;
  stats.mlp_hidden_bytes =
      n_rows * n_tokens * block.layer.intermediate_size * static_cast<int64_t>(x.element_size());

  at::Tensor h = observe_attention(block, chunks, x, observer);
  at::Tensor normed = chunks.map_chunks(n_rows, [&](int64_t start, int64_t count) {
    return mlp_input(block, rows(h, start, count));
  });
  if (block.layer.is_moe()) {
    observe_moe_mlp(block, chunks, normed, h, observer, options, stats);
  } else {
    observe_dense_mlp(block, chunks, std::move(normed), h, observer, options, stats);
  }
  return h;
}

}  // namespace gptq::model::detail
