#include "gptq/solver/hessian.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "gptq/core/error.h"

namespace gptq::solver {
namespace {

// Relative tolerance of float32 accumulation against a float64 oracle.
constexpr double kHessianRelTol = 1e-5;

double rel_error(const at::Tensor& got, const at::Tensor& expected) {
  return (got.to(at::kDouble) - expected).abs().max().item<double>() /
         expected.abs().max().item<double>();
}

TEST(Hessian, MatchesReferenceRunningMeanAndDirectSum) {
  const int64_t n_cols = 300;  // several panels, the last one partial
  at::manual_seed(1);
  const std::vector<std::vector<int64_t>> shapes = {
      {3, 7, n_cols}, {1, n_cols}, {5, 1, 2, n_cols}, {200, n_cols}, {1, 1, n_cols}, {0, n_cols}};
  HessianAccumulator accumulator(n_cols, at::kCPU);
  at::Tensor reference = at::zeros({n_cols, n_cols}, at::kDouble);  // add_batch, in float64
  int64_t n_reference = 0;
  std::vector<at::Tensor> all_rows;
  for (const auto& shape : shapes) {
    const at::Tensor X = at::randn(shape) + 0.5;
    accumulator.add(X);
    const at::Tensor rows = X.reshape({-1, n_cols}).to(at::kDouble);
    const int64_t m = rows.size(0);
    all_rows.push_back(rows);
    if (m == 0) continue;
    reference *= static_cast<double>(n_reference) / (n_reference + m);
    n_reference += m;
    const at::Tensor scaled = std::sqrt(2.0 / n_reference) * rows;
    reference += scaled.t().mm(scaled);
  }
  const at::Tensor H = accumulator.hessian();
  EXPECT_EQ(accumulator.n_samples(), n_reference);
  EXPECT_EQ(H.scalar_type(), at::kFloat);
  EXPECT_TRUE(H.equal(H.t()));
  EXPECT_LT(rel_error(H, reference), kHessianRelTol);
  const at::Tensor X_all = at::cat(all_rows);
  const at::Tensor direct = 2.0 / X_all.size(0) * X_all.t().mm(X_all);
  EXPECT_LT(rel_error(H, direct), kHessianRelTol);
}

TEST(Hessian, LowPrecisionInputs) {
  const int64_t n_cols = 64;
  at::manual_seed(2);
  HessianAccumulator accumulator(n_cols, at::kCPU);
  const at::Tensor X = at::randn({4, 33, n_cols}).to(at::kBFloat16);
  accumulator.add(X);
  accumulator.add(X.to(at::kHalf));
  const at::Tensor rows = at::cat({X, X}).reshape({-1, n_cols}).to(at::kDouble);
  const at::Tensor direct = 2.0 / rows.size(0) * rows.t().mm(rows);
  EXPECT_LT(rel_error(accumulator.hessian(), direct), 1e-3);  // fp16 rounding of bf16 values
}

TEST(Hessian, RejectsWrongWidthAndIntegerInput) {
  HessianAccumulator accumulator(16, at::kCPU);
  EXPECT_THROW(accumulator.add(at::randn({4, 15})), InputError);
  EXPECT_THROW(accumulator.add(at::ones({4, 16}, at::kInt)), InputError);
  EXPECT_THROW(HessianAccumulator(0, at::kCPU), InputError);
  EXPECT_EQ(accumulator.n_samples(), 0);
}

}  // namespace
}  // namespace gptq::solver
