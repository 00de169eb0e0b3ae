// Feeding and finishing the observer's groups (see group_feed.h).
#include "model/group_feed.h"

#include <map>
#include <string>

#include "gptq/core/error.h"

namespace gptq::model::detail {
namespace {

// "mlp.experts.0-7 gate_proj/up_proj" for expert groups of consecutive experts.
std::string experts_label(const LayerSpec& layer, const std::vector<int>& group_indices) {
  const LinearGroup& first = layer.groups[group_indices.front()];
  const LinearGroup& last = layer.groups[group_indices.back()];
  std::string roles;
  const std::string prefix = layer.expert_linear(first.expert, "");
  for (const auto& name : first.linears) roles += (roles.empty() ? "" : "/") + name.substr(prefix.size());
  return layer.moe.experts + std::to_string(first.expert) + "-" + std::to_string(last.expert) + " " + roles;
}

}  // namespace

void observe_site(const Block& block, const RowChunks& chunks, InputSite site, GroupObserver& observer,
                  int64_t n_rows, const ChunkFn& input) {
  const std::vector<int> at_site = block.layer.groups_at(site);
  if (at_site.empty()) return;
  chunks.for_chunks(n_rows, [&](int64_t start, int64_t count) {
    GroupInput chunk;
    chunk.x = input(start, count);
    chunk.row_start = start;
    for (int group_idx : at_site) observer.observe(group_idx, chunk);
  });
  finish_groups(block, at_site, observer);
}

void finish_groups(const Block& block, const std::vector<int>& group_indices, GroupObserver& observer) {
  const LayerSpec& layer = block.layer;
  BlockWeights& weights = block.weights;
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<int> experts;
  std::vector<std::vector<std::string>> expert_names;
  for (int group_idx : group_indices) {
    const LinearGroup& group = layer.groups[group_idx];
    for (const auto& name : group.linears) shapes[name] = weights.at(name + ".weight").sizes().vec();
    if (group.expert >= 0) {
      experts.push_back(group_idx);
      expert_names.push_back(group.linears);
    } else {
      observer.finish_group(group_idx, group.linears, weights);
    }
  }
  if (!experts.empty()) {
    observer.finish_independent_groups(experts, expert_names, experts_label(layer, experts), weights);
  }
  for (const auto& [name, shape] : shapes) {
    GPTQ_CHECK(weights.at(name + ".weight").sizes().vec() == shape, "observer replaced '", name,
               ".weight' with a tensor of another shape");
  }
}

}  // namespace gptq::model::detail
