// The observed sparse MLP (see observed_moe.h).
#include "model/observed_moe.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

#include "gptq/model/moe.h"
#include "model/group_feed.h"
#include "model/sparse_mlp.h"

namespace gptq::model::detail {
namespace {

// Maps a group's block input [n, H] to the group's own input.
using TokenInput = std::function<at::Tensor(const at::Tensor&)>;

// One observed pass over a sparse MLP: its input flattened to tokens, their
// routing, and the routed-token counts that decide how each expert is fed.
struct MoePass {
  const Block& block;
  const RowChunks& chunks;
  GroupObserver& observer;
  const BlockOptions& options;
  const at::Tensor& normed;  // [rows, T, H]
  at::Tensor x;              // normed as [n, H]
  ExpertRouting routing;
  // Routed tokens per expert, then the token total, over every process of a
  // data-parallel run (BlockOptions::sum_over_processes), else this one's; so
  // every process decides the same way for the same expert.
  std::vector<int64_t> counts;
  int64_t token_step;  // tokens per span: a chunk's worth of rows
};

std::vector<int64_t> routed_counts(const ExpertRouting& routing, int64_t n_tokens, const BlockOptions& options) {
  const int64_t n_experts = static_cast<int64_t>(routing.offsets.size()) - 1;
  at::Tensor counts = at::empty({n_experts + 1}, at::kLong);
  for (int64_t expert = 0; expert < n_experts; ++expert) counts[expert] = routing.count(static_cast<int>(expert));
  counts[n_experts] = n_tokens;
  if (options.sum_over_processes) options.sum_over_processes(counts);
  const int64_t* total_counts = counts.data_ptr<int64_t>();
  return std::vector<int64_t>(total_counts, total_counts + n_experts + 1);
}

// Whether routed expert `expert`, whose group reads `in_features` columns, is
// fed its routed tokens or every token.
GroupRouting expert_routing(const MoePass& pass, int expert, int64_t in_features) {
  const BlockOptions& options = pass.options;
  GroupRouting info;
  info.routed_tokens = pass.counts[expert];
  info.too_few_routed = options.moe_calibration == MoeCalibration::kRouted &&
                        info.routed_tokens < options.min_expert_tokens_per_input * in_features;
  info.all_tokens = options.moe_calibration == MoeCalibration::kAll || info.too_few_routed;
  info.fed_tokens = info.all_tokens ? pass.counts.back() : info.routed_tokens;
  return info;
}

// A group that reads every token (the shared expert's), row chunk by row chunk.
void feed_every_row(const MoePass& pass, int group_idx, const TokenInput& input) {
  const at::Tensor& normed = pass.normed;
  const int64_t hidden = normed.size(2);
  pass.chunks.for_chunks(normed.size(0), [&](int64_t start, int64_t count) {
    GroupInput chunk;
    const at::Tensor rows_x = rows(normed, start, count);
    chunk.x = input(rows_x.reshape({-1, hidden})).view({count, normed.size(1), -1});
    chunk.row_start = start;
    pass.observer.observe(group_idx, chunk);
  });
}

// A routed expert's group: its routed tokens (or every token, see
// expert_routing), span by span, each chunk with its token indices.
void feed_expert(const MoePass& pass, int group_idx, InputSite site, const TokenInput& input) {
  const LayerSpec& layer = pass.block.layer;
  const int expert = layer.groups[group_idx].expert;
  const int64_t in_features = site == InputSite::kMlpInput ? pass.x.size(1) : layer.expert_intermediate_size;
  const GroupRouting info = expert_routing(pass, expert, in_features);
  pass.observer.route_group(group_idx, info);
  const at::Tensor& x = pass.x;
  const at::Tensor tokens =
      info.all_tokens ? at::arange(x.size(0), x.options().dtype(at::kLong)) : pass.routing.expert_tokens(expert);
  for_spans(tokens.size(0), pass.token_step, [&](int64_t start, int64_t count) {
    GroupInput chunk;
    chunk.token_index = tokens.narrow(0, start, count);
    // Every token: a view of x, not a gathered copy.
    chunk.x = input(info.all_tokens ? x.narrow(0, start, count) : x.index_select(0, chunk.token_index));
    pass.observer.observe(group_idx, chunk);
  });
}

// Feeds and finishes every group at `site`; input(expert, tokens_x) is the
// input of expert `expert`'s group (-1: the shared expert).
void observe_moe_site(const MoePass& pass, InputSite site, const std::function<at::Tensor(int, const at::Tensor&)>& input) {
  const std::vector<int> at_site = pass.block.layer.groups_at(site);
  for (int group_idx : at_site) {
    const int expert = pass.block.layer.groups[group_idx].expert;
    const TokenInput group_input = [&](const at::Tensor& t) { return input(expert, t); };
    if (expert < 0) {
      feed_every_row(pass, group_idx, group_input);
    } else {
      feed_expert(pass, group_idx, site, group_input);
    }
  }
  finish_groups(pass.block, at_site, pass.observer);
}

}  // namespace

void observe_moe_mlp(const Block& block, const RowChunks& chunks, const at::Tensor& normed, at::Tensor& h,
                     GroupObserver& observer, const BlockOptions& options, BlockStats& stats) {
  const at::Tensor x = normed.reshape({-1, normed.size(2)});
  const int64_t token_step = std::max<int64_t>(1, chunks.rows_per_chunk() * normed.size(1));
  ExpertRouting routing = route_tokens(block.layer, block.weights, x);
  std::vector<int64_t> counts = routed_counts(routing, x.size(0), options);
  const MoePass pass{block, chunks, observer, options, normed, x, std::move(routing), std::move(counts), token_step};
  stats.mlp_recomputed = true;
  stats.sparse_mlp = true;
  stats.mlp_hidden_bytes = pass.routing.top_k * pass.x.size(0) * block.layer.expert_intermediate_size *
                           static_cast<int64_t>(pass.x.element_size());

  observe_moe_site(pass, InputSite::kMlpInput, [](int, const at::Tensor& t) { return t; });
  observe_moe_site(pass, InputSite::kMlpHidden, [&](int expert, const at::Tensor& t) {
    return expert < 0 ? shared_hidden(block, t) : expert_hidden(block, expert, t);
  });

  at::Tensor out = moe_output(block, pass.x, pass.routing, pass.token_step);
  h.add_(out.view(h.sizes()));
}

}  // namespace gptq::model::detail
