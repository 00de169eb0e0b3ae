#pragma once
// The sparse MLP run stage by stage with an observer (private to model/):
// every gate/up group (the shared expert's, then each routed expert's) is fed
// and finished, then every down group on the activations of the finished
// gate/up, then the output is computed with the finished experts.
#include <ATen/core/Tensor.h>

#include "gptq/model/forward.h"
#include "model/block.h"
#include "model/row_chunks.h"

namespace gptq::model::detail {

// normed: post_attention_layernorm(h) [rows, T, H] for all rows; adds the
// sparse MLP's output to h in place. Expert activations exist for one span of
// tokens at a time (recomputed for the output, never held). A routed expert's
// group is fed the tokens routed to it, or every token (options.moe_calibration,
// min_expert_tokens_per_input), and the observer is told which (route_group).
void observe_moe_mlp(const Block& block, const RowChunks& chunks, const at::Tensor& normed, at::Tensor& h,
                     GroupObserver& observer, const BlockOptions& options, BlockStats& stats);

}  // namespace gptq::model::detail
