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

double relative_error(const at::Tensor& actual, const at::Tensor& expected) {
  return (actual.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>() /
         expected.to(at::kDouble).abs().max().item<double>();
}

TEST(Factorization, ReversedCholeskyIsUpperAndReproducesH) {
  for (int64_t n : {1, 3, 130, 513}) {
    const at::Tensor H = spd(n, n);
    const at::Tensor R = reversed_cholesky(H);
    ASSERT_TRUE(R.defined()) << n;
    EXPECT_EQ(at::tril(R, -1).abs().max().item<float>(), 0.0f) << n;
    EXPECT_LT(relative_error(R.mm(R.t()), H), 1e-5) << n;
  }
}

TEST(Factorization, InverseOfRIsUpperCholeskyOfHInverse) {
  // U = R^-1 equals the reference's cholesky(cholesky_inverse(cholesky(H)), upper=True).
  for (int64_t n : {3, 130, 257}) {
    const at::Tensor H = spd(n, 100 + n);
    const at::Tensor U = upper_triangular_inverse(reversed_cholesky(H));
    const at::Tensor expected =
        at::linalg_cholesky(at::linalg_inv(H.to(at::kDouble)), /*upper=*/true);
    EXPECT_LT(relative_error(U, expected), 1e-4) << n;
    EXPECT_EQ(at::tril(U, -1).abs().max().item<float>(), 0.0f) << n;
  }
}

TEST(Factorization, BlockIdentityTheLeftLookingUpdateUses) {
  // U[<s, b] = -R[<s, <s]^-1 R[<s, b] U[b, b]: the error of the solved columns
  // reaches block b through R, with U needed on the block only.
  const int64_t n = 300, s = 128, e = 200;
  const at::Tensor H = spd(n, 7).to(at::kDouble);
  const at::Tensor R = reversed_cholesky(H.to(at::kFloat)).to(at::kDouble);
  const at::Tensor U = at::linalg_inv(R);
  at::manual_seed(3);
  const at::Tensor delta = at::randn({16, s}, at::kDouble);    // (W0 - Q)[:, <s]
  const at::Tensor err = delta.mm(R.narrow(0, 0, s).narrow(1, 0, s));  // Err[:, <s]
  const at::Tensor via_hinv = -err.mm(U.narrow(0, 0, s).narrow(1, s, e - s));
  const at::Tensor via_r = delta.mm(R.narrow(0, 0, s).narrow(1, s, e - s))
                               .mm(U.narrow(0, s, e - s).narrow(1, s, e - s));
  EXPECT_LT(relative_error(via_r, via_hinv), 1e-9);
}

TEST(Factorization, IndefiniteMatrixGivesUndefined) {
  at::Tensor H = spd(32, 1);
  H[4][4] = -1.0;
  EXPECT_FALSE(reversed_cholesky(H).defined());
}

}  // namespace
}  // namespace gptq::solver
