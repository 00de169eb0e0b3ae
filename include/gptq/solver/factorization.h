#pragma once
// The factorisations GPTQ needs from H, done with one Cholesky and one
// triangular inverse instead of the reference's three O(n^3) steps
// (cholesky, cholesky_inverse, cholesky(upper=True)).
//
// GPTQ reads the rows of U, the upper Cholesky factor of H^-1 (H^-1 = U^T U).
// With J the reversal permutation, J H J = L L^T (L lower) gives
// H = (J L J)(J L J)^T with J L J upper, so H^-1 = (J L^-1 J)^T (J L^-1 J) and
// U = J L^-1 J: it is upper triangular with a positive diagonal, hence the
// Cholesky factor.
#include <ATen/core/Tensor.h>

namespace gptq::solver {

// L^-1 of a lower-triangular float32 [n, n] L (upper part of L ignored, of the
// result zero), by recursive blocking: L^-1 = [[A^-1, 0], [-C^-1 B A^-1, C^-1]]
// where the off-diagonal block is two triangular solves against A and C
// (about n^3/3 flops, all in BLAS level 3).
at::Tensor lower_triangular_inverse(const at::Tensor& L);

// U with U^T U = H^-1 for a symmetric float32 H; an undefined tensor when H is
// not positive definite in float32 (Cholesky fails or U is not finite).
at::Tensor upper_cholesky_of_inverse(const at::Tensor& H);

}  // namespace gptq::solver
