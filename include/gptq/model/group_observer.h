#pragma once
// What the block forward tells a quantizer while it runs (block_forward in
// forward.h takes a GroupObserver): each true-sequential group's exact input,
// one chunk at a time, and the moment the group must be finished before its
// linears run. The interface only; the calib module implements it.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gptq/model/weights.h"

namespace gptq::model {

// One chunk of a group's input, as the group's linears consume it.
//   x            [rows, T, in_features]: every token of rows [row_start,
//                row_start + rows) of the batch (token_index undefined); or
//                [n, in_features]: a subset of the chunk's tokens (an expert's),
//                with token_index int64 [n] the flat index row * T + t of each
//                row of x within the whole batch (so routing weights, counts or
//                per-token data line up across chunks).
struct GroupInput {
  at::Tensor x;
  at::Tensor token_index;  // undefined: every token of the chunk
  int64_t row_start = 0;
};

// How a routed expert's group was fed (told to the observer before its first
// observe call).
struct GroupRouting {
  int64_t routed_tokens = 0;  // tokens the router sent to the expert
  int64_t fed_tokens = 0;     // tokens its Hessian is accumulated over
  // Every calibration token was fed: --moe-calibration all, or too few routed
  // tokens (fewer than BlockOptions::min_expert_tokens_per_input x in_features).
  bool all_tokens = false;
  bool too_few_routed = false;  // all_tokens because routed_tokens was below the threshold
};

// Sees the exact input of each true-sequential group before its linears run,
// one chunk of rows (calibration windows) at a time, so no group input is ever
// materialized for all rows at once.
//
// Contract, per group g = index into config.layer(weights.layer).groups:
//   observe(g, input)    once per row chunk, in row order, covering every row
//                        exactly once (for a subset group: every token routed
//                        to it, and only those); `input.x` is only valid during
//                        the call (copy what must outlive it). Weights must not
//                        change here. A group no token reaches gets no call.
//   finish_group(g, ...) once, after the last observe(g) and before any row
//                        runs through the group's linears; the observer may
//                        replace "<linear>.weight" (same shape, dtype, device)
//                        in `weights` and every row then runs with the
//                        replaced tensors.
// Groups that read the same input (same site in the block) see the same chunk
// and are finished in index order.
class GroupObserver {
 public:
  virtual ~GroupObserver() = default;
  virtual void observe(int group_index, const GroupInput& input) = 0;
  // Before the first observe(g) of a routed expert's group g.
  virtual void route_group(int group_index, const GroupRouting& routing) {
    (void)group_index;
    (void)routing;
  }
  virtual void finish_group(int group_index, const std::vector<std::string>& linear_names,
                            BlockWeights& weights) = 0;
  // Finishes groups that depend on nothing of each other (the routed experts
  // of one site: each its own weights and Hessian) as finish_group would each,
  // in any order or concurrently, touching no other group's weights. `label`
  // names them together for logs ("mlp.experts.0-127 gate_proj/up_proj").
  // Default: finish_group one by one, in order.
  virtual void finish_independent_groups(const std::vector<int>& group_indices,
                                         const std::vector<std::vector<std::string>>& linear_names,
                                         const std::string& label, BlockWeights& weights) {
    (void)label;
    for (size_t idx = 0; idx < group_indices.size(); ++idx) {
      finish_group(group_indices[idx], linear_names[idx], weights);
    }
  }
};

}  // namespace gptq::model
