#pragma once
// Moving a weight between its original column order and the solve order
// (act-order's permutation), private to the solver. On CPU the gathers are
// one parallel pass over rows that fuses what would otherwise be separate
// full-matrix tensor ops; other devices use those tensor ops.
#include <ATen/core/Tensor.h>

namespace gptq::solver::detail {

// W float32; returns [rows, cols] with column c = W[:, perm[c]], zero where
// dead[perm[c]]. Throws InputError when any entry of W (dead columns
// included) is NaN or Inf.
at::Tensor gather_solve_order(const at::Tensor& W, const at::Tensor& perm, const at::Tensor& dead);

// out[:, perm[c]] = X[:, c]: back from solve order (any dtype). Only the
// loops that leave results in solve order need it: the CPU kernel writes
// original order itself.
at::Tensor scatter_original_order(const at::Tensor& X, const at::Tensor& perm);

// H[perm][:, perm] for a square H.
at::Tensor permute_symmetric(const at::Tensor& H, const at::Tensor& perm);

}  // namespace gptq::solver::detail
