// The solver runs whatever QuantGrid it is given: a grid the fused kernels
// cannot run takes the tensor-ops loop and gives the same answer.
#include "gptq/solver/grid.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "gptq/solver/gptq.h"

namespace gptq::solver {
namespace {

// The min-max grid, but declaring itself non-affine: the solver must call
// quantize()/dequantize() instead of the fused kernel; it counts the calls.
class OpaqueGrid : public QuantGrid {
 public:
  explicit OpaqueGrid(QuantConfig config) : inner_(config) {}
  int bits() const override { return inner_.bits(); }
  QuantParams fit(const at::Tensor& x) const override { return inner_.fit(x); }
  at::Tensor quantize(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero) const override {
    ++quantize_calls;
    return inner_.quantize(x, scale, zero);
  }
  at::Tensor dequantize(const at::Tensor& codes, const at::Tensor& scale,
                        const at::Tensor& zero) const override {
    return inner_.dequantize(codes, scale, zero);
  }
  std::optional<AffineCodes> affine() const override { return std::nullopt; }
  mutable int quantize_calls = 0;

 private:
  MinMaxIntegerGrid inner_;
};

// The min-max grid fitted jointly: every group from the untouched weight at
// once (as ggml's K-quants are), remembering the importance it was given.
class JointGrid : public OpaqueGrid {
 public:
  using OpaqueGrid::OpaqueGrid;
  std::optional<QuantParams> fit_all(const at::Tensor& W, const at::Tensor& importance,
                                     int64_t group_size) const override {
    ++fit_all_calls;
    last_importance = importance;
    const int64_t n_groups = W.size(1) / group_size;
    at::Tensor scale = at::empty({n_groups, W.size(0)}), zero = at::empty({n_groups, W.size(0)});
    for (int64_t group = 0; group < n_groups; ++group) {
      const QuantParams params = fit(W.narrow(1, group * group_size, group_size));
      scale[group].copy_(params.scale);
      zero[group].copy_(params.zero);
    }
    return QuantParams{scale, zero, at::Tensor()};
  }
  bool fits_jointly() const override { return true; }
  mutable int fit_all_calls = 0;
  mutable at::Tensor last_importance;
};

TEST(QuantGrid, MinMaxGridIsTheQuantizer) {
  QuantConfig config;
  config.bits = 3;
  config.sym = false;
  const MinMaxIntegerGrid grid(config);
  EXPECT_EQ(grid.affine()->max_code, 7);
  const at::Tensor x = at::randn({4, 16});
  const QuantParams a = grid.fit(x), b = find_params(x, config);
  EXPECT_TRUE(a.scale.equal(b.scale) && a.zero.equal(b.zero));
  EXPECT_THROW(MinMaxIntegerGrid(QuantConfig{5, 128, true, false, 0}), std::exception);
}

TEST(QuantGrid, NonAffineGridRunsThroughTheTensorOpsLoop) {
  at::manual_seed(3);
  const at::Tensor W = at::randn({16, 64});
  const at::Tensor X = at::randn({256, 64});
  const at::Tensor H = 2.0 / 256 * X.t().mm(X);
  GptqConfig config;
  config.quant.group_size = 16;
  config.desc_act = true;
  const QuantizedWeight fused = gptq_quantize(W, H, config);
  auto opaque = std::make_shared<OpaqueGrid>(config.quant);
  config.grid = opaque;
  const QuantizedWeight through_grid = gptq_quantize(W, H, config);
  EXPECT_EQ(opaque->quantize_calls, 64);  // one call per column
  const double mismatch = fused.codes.ne(through_grid.codes).to(at::kDouble).mean().item<double>();
  EXPECT_LE(mismatch, 1e-3);
  EXPECT_NEAR(fused.loss, through_grid.loss, 1e-3 * fused.loss);
  // RTN honours the grid too.
  opaque->quantize_calls = 0;
  rtn_quantize(W, config, at::Tensor());
  EXPECT_EQ(opaque->quantize_calls, 4);  // one call per group
}

TEST(QuantGrid, JointGridIsFittedOnceFromTheUntouchedWeightAsStaticGroups) {
  at::manual_seed(5);
  const at::Tensor W = at::randn({8, 64});
  const at::Tensor X = at::randn({256, 64});
  const at::Tensor H = 2.0 / 256 * X.t().mm(X);
  GptqConfig config;
  config.quant.group_size = 16;
  config.quant.sym = false;
  config.desc_act = true;
  GptqConfig static_config = config;
  static_config.static_groups = true;
  static_config.grid = std::make_shared<OpaqueGrid>(config.quant);
  const QuantizedWeight expected = gptq_quantize(W, H, static_config);
  auto joint = std::make_shared<JointGrid>(config.quant);
  config.grid = joint;  // static_groups stays false: the grid alone makes the groups static
  const QuantizedWeight got = gptq_quantize(W, H, config);
  EXPECT_EQ(joint->fit_all_calls, 1);
  EXPECT_TRUE(joint->last_importance.equal(H.diagonal()));
  EXPECT_TRUE(got.codes.equal(expected.codes));
  EXPECT_TRUE(got.scales.equal(expected.scales));
  EXPECT_TRUE(got.g_idx.equal(expected.g_idx));
  EXPECT_TRUE(got.grid_zeros.equal(got.zeros.to(at::kFloat)));
  // RTN fits jointly too, weighing columns by diag(H) when it has one.
  joint->fit_all_calls = 0;
  const QuantizedWeight rtn = rtn_quantize(W, config, H);
  EXPECT_EQ(joint->fit_all_calls, 1);
  EXPECT_TRUE(joint->last_importance.equal(H.diagonal()));
  EXPECT_TRUE(rtn.scales.equal(expected.scales));
  rtn_quantize(W, config, at::Tensor());
  EXPECT_FALSE(joint->last_importance.defined());
}

}  // namespace
}  // namespace gptq::solver
