#pragma once
// A naive GPTQ for the tests: the paper's Algorithm 1 column by column with
// plain tensor ops and the reference's three-step inverse
// (cholesky -> cholesky_inverse -> cholesky(upper)), no lazy batching. It keeps
// the reference's semantics (act-order, dead columns, damp, static groups,
// group grids from W as it stood when the block of `block_size` columns
// holding the group's first column began). Slow; small layers only.
#include <ATen/core/Tensor.h>

#include "gptq/solver/gptq.h"

namespace gptq::testing {

solver::QuantizedWeight naive_gptq(const at::Tensor& W, const at::Tensor& H,
                                   const solver::GptqConfig& config);

}  // namespace gptq::testing
