#pragma once
// The block run stage by stage over all rows with an observer between the
// stages (block_forward with a GroupObserver; private to model/). Each site's
// groups are fed their exact input and finished before any row runs through
// their linears, so later stages see the finished (quantized) weights.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "gptq/model/forward.h"
#include "model/block.h"

namespace gptq::model::detail {

// x [B, T, H] -> the block output [B, T, H]. Tensors of hidden size (x, a
// norm's output, the attention output, the residual h) exist for all rows;
// those of intermediate size for `rows_per_chunk` rows, except the dense MLP's
// activation when it fits options.max_held_bytes. Fills `stats`.
at::Tensor forward_observed(const Block& block, const at::Tensor& x, GroupObserver& observer,
                            const BlockOptions& options, int64_t rows_per_chunk, BlockStats& stats);

}  // namespace gptq::model::detail
