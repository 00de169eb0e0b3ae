// The RMSNorms against their formulas in fp64, and their dtype behaviour.
#include "gptq/model/norm.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace gptq::model {
namespace {

// fp32 results of the same formula computed two ways agree to this.
constexpr double kFp32Tol = 1e-5;

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(RmsNorm, MatchesFormulaAndKeepsDtype) {
  at::Tensor x = at::randn({3, 5, 16}, at::kDouble);
  at::Tensor weight = at::randn({16}, at::kDouble);
  at::Tensor expected = weight * x / (x.pow(2).mean(-1, true) + 1e-6).sqrt();
  at::Tensor got = rms_norm(x.to(at::kFloat), weight.to(at::kFloat), 1e-6);
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_LT(max_diff(got, expected), kFp32Tol);
  EXPECT_EQ(rms_norm(x.to(at::kBFloat16), weight.to(at::kBFloat16), 1e-6).scalar_type(), at::kBFloat16);
}

TEST(RmsNorm, GemmaPlusOneRunsInFp32AndCastsOnce) {
  at::Tensor x = at::randn({3, 5, 16}, at::kDouble);
  at::Tensor weight = 0.2 * at::randn({16}, at::kDouble);
  at::Tensor expected = (1 + weight) * x / (x.pow(2).mean(-1, true) + 1e-6).sqrt();
  EXPECT_LT(max_diff(rms_norm_plus_one(x.to(at::kFloat), weight.to(at::kFloat), 1e-6), expected), kFp32Tol);
  // bf16: normalised and scaled in fp32, rounded once (not the weight rounded after a cast).
  at::Tensor x16 = x.to(at::kBFloat16), w16 = weight.to(at::kBFloat16);
  at::Tensor once = ((x16.to(at::kFloat) * at::rsqrt(x16.to(at::kFloat).pow(2).mean(-1, true) + 1e-6)) *
                     (1 + w16.to(at::kFloat))).to(at::kBFloat16);
  EXPECT_TRUE(rms_norm_plus_one(x16, w16, 1e-6).equal(once));
}

}  // namespace
}  // namespace gptq::model
