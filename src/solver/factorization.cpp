#include "gptq/solver/factorization.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"

namespace gptq::solver {

at::Tensor reversed_cholesky_of_flipped(const at::Tensor& H_reversed) {
  GPTQ_CHECK(H_reversed.dim() == 2 && H_reversed.size(0) == H_reversed.size(1),
             "expected a square matrix, got ", H_reversed.sizes());
  auto [L, info] = at::linalg_cholesky_ex(H_reversed, /*upper=*/false, /*check_errors=*/false);
  if (info.item<int64_t>() != 0) return {};
  if (!at::isfinite(L.diagonal()).all().item<bool>()) return {};
  return L.flip({0, 1});
}

at::Tensor reversed_cholesky(const at::Tensor& H) {
  return reversed_cholesky_of_flipped(H.flip({0, 1}));
}

at::Tensor upper_triangular_inverse(const at::Tensor& R) {
  GPTQ_CHECK(R.dim() == 2 && R.size(0) == R.size(1), "expected a square matrix, got ", R.sizes());
  const at::Tensor identity = at::eye(R.size(0), R.options());
  return at::linalg_solve_triangular(at::triu(R), identity, /*upper=*/true);
}

}  // namespace gptq::solver
