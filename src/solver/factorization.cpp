#include "gptq/solver/factorization.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"

namespace gptq::solver {
namespace {

// Below this size a single triangular solve against the identity is cheaper
// than recursing further.
constexpr int64_t kInverseLeaf = 256;

void invert_lower_into(const at::Tensor& L, at::Tensor out) {
  const int64_t n = L.size(0);
  if (n <= kInverseLeaf) {
    const at::Tensor identity = at::eye(n, L.options());
    out.copy_(at::linalg_solve_triangular(L, identity, /*upper=*/false));
    return;
  }
  const int64_t split = (n / 2 + 63) / 64 * 64;
  const at::Tensor A = L.narrow(0, 0, split).narrow(1, 0, split);
  const at::Tensor B = L.narrow(0, split, n - split).narrow(1, 0, split);
  const at::Tensor C = L.narrow(0, split, n - split).narrow(1, split, n - split);
  invert_lower_into(A, out.narrow(0, 0, split).narrow(1, 0, split));
  invert_lower_into(C, out.narrow(0, split, n - split).narrow(1, split, n - split));
  // -C^-1 B A^-1 as two solves against the factors themselves.
  const at::Tensor B_Ainv = at::linalg_solve_triangular(A, B, /*upper=*/false, /*left=*/false);
  out.narrow(0, split, n - split)
      .narrow(1, 0, split)
      .copy_(at::linalg_solve_triangular(C, B_Ainv, /*upper=*/false, /*left=*/true).neg_());
}

}  // namespace

at::Tensor lower_triangular_inverse(const at::Tensor& L) {
  GPTQ_CHECK(L.dim() == 2 && L.size(0) == L.size(1), "expected a square matrix, got ", L.sizes());
  at::Tensor out = at::zeros_like(L, at::MemoryFormat::Contiguous);
  invert_lower_into(L, out);
  return out;
}

at::Tensor upper_cholesky_of_inverse(const at::Tensor& H) {
  GPTQ_CHECK(H.dim() == 2 && H.size(0) == H.size(1), "expected a square matrix, got ", H.sizes());
  const at::Tensor reversed = H.flip({0, 1});
  auto [L, info] = at::linalg_cholesky_ex(reversed, /*upper=*/false, /*check_errors=*/false);
  if (info.item<int64_t>() != 0) return {};
  at::Tensor U = lower_triangular_inverse(L).flip({0, 1});
  if (!at::isfinite(U.diagonal()).all().item<bool>()) return {};
  return U;
}

}  // namespace gptq::solver
