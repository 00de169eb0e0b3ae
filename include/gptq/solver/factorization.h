#pragma once
// The factorisations GPTQ needs from H, with one Cholesky and no O(n^3) inverse
// (the reference does cholesky, cholesky_inverse and cholesky(upper=True)).
//
// GPTQ reads U, the upper Cholesky factor of H^-1 (H^-1 = U^T U). With J the
// reversal permutation, J H J = L L^T (L lower) gives H = R R^T with
// R = J L J upper triangular, and U = R^-1. The solver never forms U whole:
// it needs U only on the diagonal blocks (small triangular inverses) and gets
// the off-diagonal part of the error propagation from R itself, by the
// block identity of an upper-triangular inverse
//     U[<s, b] = -R[<s, <s]^-1 R[<s, b] U[b, b]        (b: columns s..e)
// (see solver/gptq.h for how the update uses it).
#include <ATen/core/Tensor.h>

namespace gptq::solver {

// R upper triangular with R R^T = H for a symmetric float32 [n, n] H (any
// device); an undefined tensor when H is not positive definite in float32.
at::Tensor reversed_cholesky(const at::Tensor& H);

// The same R from H_reversed = J H J (what a caller that permutes H anyway
// builds directly, saving the flip of H).
at::Tensor reversed_cholesky_of_flipped(const at::Tensor& H_reversed);

// R^-1 of an upper-triangular [n, n] R (its strict lower part is ignored):
// for R from reversed_cholesky, the upper Cholesky factor of H^-1.
at::Tensor upper_triangular_inverse(const at::Tensor& R);

}  // namespace gptq::solver
