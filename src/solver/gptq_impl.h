#pragma once
// Solver internals shared with the tests and the benchmark (not public API).
#include <ATen/core/Tensor.h>

#include "gptq/solver/gptq.h"

namespace gptq::solver::detail {

// kFused: the fused per-row block loop (CPU, or the CUDA kernel when built);
// kTensorOps: per-column libtorch ops on any device (MPS, CUDA without our
// kernels), kept selectable so the tests can check it on CPU.
enum class BlockLoop { kAuto, kFused, kTensorOps };

QuantizedWeight gptq_quantize_with(const at::Tensor& W, const at::Tensor& H,
                                   const GptqConfig& config, BlockLoop loop);

}  // namespace gptq::solver::detail
