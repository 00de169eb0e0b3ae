#include "gptq/solver/factorization.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace gptq::solver {
namespace {

at::Tensor spd(int64_t n, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor X = at::randn({2 * n, n}) * (at::rand({n}) + 0.1);
  return X.t().mm(X) / n + 0.01 * at::eye(n);
}

TEST(Factorization, TriangularInverseIsTheInverse) {
  for (int64_t n : {1, 5, 256, 257, 600}) {  // leaf, one split, uneven splits
    const at::Tensor L = at::linalg_cholesky(spd(n, n));
    const at::Tensor Linv = lower_triangular_inverse(L);
    EXPECT_TRUE(at::allclose(Linv.mm(L), at::eye(n), 0, 1e-4)) << n;
    EXPECT_EQ(at::triu(Linv, 1).abs().max().item<float>(), 0.0f) << n;
  }
}

TEST(Factorization, ReversedCholeskyGivesUpperFactorOfInverse) {
  // U = J L^-1 J with J H J = L L^T equals cholesky(inverse(H), upper=True).
  for (int64_t n : {3, 130, 513}) {
    const at::Tensor H = spd(n, 100 + n);
    const at::Tensor U = upper_cholesky_of_inverse(H);
    ASSERT_TRUE(U.defined());
    const at::Tensor H64 = H.to(at::kDouble);
    const at::Tensor expected = at::linalg_cholesky(at::linalg_inv(H64), /*upper=*/true);
    const double rel = (U.to(at::kDouble) - expected).abs().max().item<double>() /
                       expected.abs().max().item<double>();
    EXPECT_LT(rel, 1e-4) << n;
    EXPECT_EQ(at::tril(U, -1).abs().max().item<float>(), 0.0f);
  }
}

TEST(Factorization, IndefiniteMatrixGivesUndefined) {
  at::Tensor H = spd(32, 1);
  H[4][4] = -1.0;
  EXPECT_FALSE(upper_cholesky_of_inverse(H).defined());
}

}  // namespace
}  // namespace gptq::solver
