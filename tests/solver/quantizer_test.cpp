#include "gptq/solver/quantizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "gptq/core/error.h"
#include "gptq/solver/gptq.h"

namespace gptq::solver {
namespace {

TEST(Quantizer, AsymmetricGridCoversTheRow) {
  const at::Tensor x = at::tensor({-1.0f, 0.5f, 2.0f, 0.0f}).reshape({1, 4});
  QuantConfig config;
  config.sym = false;
  const QuantParams params = find_params(x, config);
  EXPECT_FLOAT_EQ(params.scale.item<float>(), 3.0f / 15);
  EXPECT_FLOAT_EQ(params.zero.item<float>(), 5.0f);
  const at::Tensor codes = quantize_codes(x, params.scale, params.zero, 15);
  EXPECT_TRUE(codes.equal(at::tensor({0.0f, 7.0f, 15.0f, 5.0f}).reshape({1, 4})));
}

// GPTQ v1 needs zero >= 1: a zero that rounds to 0 is raised and the step
// widened so the row's maximum stays on the grid.
TEST(Quantizer, MinZeroRaisesTheZeroAndKeepsTheTopOnTheGrid) {
  const at::Tensor x = at::tensor({0.0f, 0.5f, 1.5f, 3.0f, -1.0f, 0.5f, 2.0f, 0.0f}).reshape({2, 4});
  QuantConfig config;
  config.sym = false;
  config.min_zero = 1;
  const QuantParams params = find_params(x, config);
  // Row 0 is all non-negative: zero 0 -> 1, scale 3/15 -> 3/14.
  EXPECT_FLOAT_EQ(params.zero[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(params.scale[0].item<float>(), 3.0f / 14);
  // Row 1 keeps its grid (zero 5).
  EXPECT_FLOAT_EQ(params.zero[1].item<float>(), 5.0f);
  EXPECT_FLOAT_EQ(params.scale[1].item<float>(), 3.0f / 15);
  EXPECT_TRUE(params.raised[0].item<bool>());
  EXPECT_FALSE(params.raised[1].item<bool>());
  const at::Tensor codes = quantize_codes(x, params.scale.unsqueeze(1), params.zero.unsqueeze(1), 15);
  const at::Tensor back = dequantize_codes(codes, params.scale.unsqueeze(1), params.zero.unsqueeze(1));
  EXPECT_NEAR(back[0][3].item<float>(), 3.0f, 1e-6);  // the top is representable, not clipped
  EXPECT_EQ(codes[0][3].item<float>(), 15.0f);
  // Symmetric grids and min_zero 0 never raise.
  config.min_zero = 0;
  EXPECT_FALSE(find_params(x, config).raised.defined());
  config.sym = true;
  config.min_zero = 1;
  EXPECT_FALSE(find_params(x, config).raised.defined());
  config.min_zero = 2;
  EXPECT_THROW(validate(config), InputError);
}

TEST(Quantizer, SymmetricZeroIsMidpointAndEmptyRowsGetUnitRange) {
  const at::Tensor x = at::tensor({-3.0f, 1.0f, 0.0f, 0.0f}).reshape({2, 2});
  for (int bits : {2, 3, 4, 8}) {
    QuantConfig config;
    config.bits = bits;
    const QuantParams params = find_params(x, config);
    const int maxq = (1 << bits) - 1;
    EXPECT_TRUE(params.zero.equal(at::full({2}, (maxq + 1) / 2, at::kFloat)));
    EXPECT_FLOAT_EQ(params.scale[0].item<float>(), 6.0f / maxq);
    EXPECT_FLOAT_EQ(params.scale[1].item<float>(), 2.0f / maxq);
  }
}

TEST(Quantizer, MseSearchNeverIncreasesTheError) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({64, 128}) * at::exp(at::randn({64, 1}));
  for (bool sym : {true, false}) {
    QuantConfig plain;
    plain.sym = sym;
    plain.bits = 3;
    QuantConfig searched = plain;
    searched.mse = true;
    auto error = [&](const QuantParams& p) {
      const at::Tensor s = p.scale.unsqueeze(1), z = p.zero.unsqueeze(1);
      return (dequantize_codes(quantize_codes(x, s, z, 7), s, z) - x).abs().pow(2.4).sum(1);
    };
    const at::Tensor e_plain = error(find_params(x, plain));
    const at::Tensor e_searched = error(find_params(x, searched));
    EXPECT_TRUE((e_searched <= e_plain * (1 + 1e-6)).all().item<bool>());
    EXPECT_LT(e_searched.sum().item<double>(), e_plain.sum().item<double>());
  }
}

TEST(Rtn, CodesMatchPerGroupRounding) {
  at::manual_seed(2);
  const at::Tensor W = at::randn({8, 100});
  QuantConfig config;
  config.group_size = 32;  // ragged last group of 4
  config.sym = false;
  const QuantizedWeight q = rtn_quantize(W, config);
  EXPECT_EQ(q.scales.size(0), 4);
  EXPECT_TRUE(q.g_idx.equal(at::arange(100).div(32, "floor").to(at::kInt)));
  const at::Tensor last = W.narrow(1, 96, 4);
  const QuantParams params = find_params(last, config);
  EXPECT_TRUE(q.codes.narrow(1, 96, 4).to(at::kFloat).equal(
      quantize_codes(last, params.scale.unsqueeze(1), params.zero.unsqueeze(1), 15)));
  EXPECT_NEAR(q.loss, (W - q.dequantized).square().sum().item<double>(), 1e-6);
  const at::Tensor H = at::diag(at::arange(1, 101, at::kFloat));
  const QuantizedWeight weighted = rtn_quantize(W, config, H);
  EXPECT_NEAR(weighted.loss,
              ((W - q.dequantized).square().sum(0) * at::arange(1, 101)).sum().item<double>() / 2,
              1e-4 * weighted.loss);
  EXPECT_TRUE(weighted.codes.equal(q.codes));
}

}  // namespace
}  // namespace gptq::solver
