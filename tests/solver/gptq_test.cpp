#include "gptq/solver/gptq.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gptq/core/error.h"
#include "solver/gptq_impl.h"
#include "testing/naive_gptq.h"

namespace gptq::solver {
namespace {

// Share of codes the blocked solver may give differently from the naive one
// (float rounding order differs: a value on a rounding tie can flip).
constexpr double kCodeMismatchShare = 1e-3;
// Relative loss difference tolerated between the two.
constexpr double kLossRelTol = 1e-3;

// 2/n X^T X of correlated inputs: columns share a random mixing, so H has
// a realistic spread of eigenvalues and distinct diagonal entries.
at::Tensor make_hessian(int64_t cols, int64_t samples, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor mixing = at::eye(cols) + 0.3 * at::randn({cols, cols}) / std::sqrt(cols);
  const at::Tensor X = at::randn({samples, cols}) * (at::rand({cols}) + 0.2) + 0.1 * at::randn({samples, 1});
  const at::Tensor mixed = X.mm(mixing);
  at::Tensor H = 2.0 / samples * mixed.t().mm(mixed);
  return (H + H.t()) / 2;
}

struct Case {
  int bits;
  int group_size;
  bool desc_act;
  bool static_groups;
  bool sym;
  int64_t cols;
};

std::string describe(const Case& c) {
  return "bits=" + std::to_string(c.bits) + " g=" + std::to_string(c.group_size) +
         " desc_act=" + std::to_string(c.desc_act) + " static=" + std::to_string(c.static_groups) +
         " sym=" + std::to_string(c.sym) + " cols=" + std::to_string(c.cols);
}

void expect_agrees(const QuantizedWeight& fast, const QuantizedWeight& naive, const std::string& what) {
  ASSERT_EQ(fast.codes.sizes(), naive.codes.sizes()) << what;
  const double mismatch =
      fast.codes.ne(naive.codes).to(at::kDouble).mean().item<double>();
  EXPECT_LE(mismatch, kCodeMismatchShare) << what;
  EXPECT_NEAR(fast.loss, naive.loss, kLossRelTol * naive.loss + 1e-9) << what;
  EXPECT_TRUE(fast.g_idx.equal(naive.g_idx)) << what;
  EXPECT_TRUE(fast.zeros.equal(naive.zeros)) << what;
  EXPECT_TRUE(at::allclose(fast.scales, naive.scales, 1e-4, 1e-6)) << what;
  EXPECT_DOUBLE_EQ(fast.damp_used, naive.damp_used) << what;
}

void expect_consistent(const QuantizedWeight& q, int64_t rows, int64_t cols, int bits) {
  ASSERT_EQ(q.codes.scalar_type(), at::kByte);
  ASSERT_EQ(q.zeros.scalar_type(), at::kInt);
  ASSERT_EQ(q.g_idx.scalar_type(), at::kInt);
  EXPECT_EQ(q.codes.sizes(), (std::vector<int64_t>{rows, cols}));
  EXPECT_LE(q.codes.max().item<int>(), (1 << bits) - 1);
  EXPECT_GE(q.zeros.min().item<int>(), 0);
  EXPECT_LE(q.zeros.max().item<int>(), (1 << bits) - 1);
  const at::Tensor g = q.g_idx.to(at::kLong);
  EXPECT_GE(g.min().item<int64_t>(), 0);
  EXPECT_LT(g.max().item<int64_t>(), q.scales.size(0));
  const at::Tensor rebuilt = (q.codes.to(at::kFloat) - q.zeros.index_select(0, g).t().to(at::kFloat)) *
                             q.scales.index_select(0, g).t();
  EXPECT_TRUE(rebuilt.equal(q.dequantized));
  EXPECT_TRUE(at::isfinite(q.dequantized).all().item<bool>());
}

TEST(Gptq, BlockedAgreesWithNaiveAcrossConfigs) {
  const std::vector<Case> cases = {
      {4, 128, true, false, true, 256},  {4, 128, false, false, true, 256},
      {4, -1, false, false, false, 256}, {4, -1, true, false, true, 256},
      {2, 32, false, false, false, 256}, {2, 32, true, false, true, 256},
      {3, 32, true, false, false, 256},  {3, 128, false, false, true, 256},
      {8, 128, true, false, false, 256}, {8, 32, false, false, true, 256},
      {4, 48, false, false, false, 200}, {4, 48, true, false, true, 200},   // ragged
      {4, 96, true, false, false, 300},                                       // group across blocks
      {4, 32, true, true, true, 256},    {4, 64, false, true, false, 200},    // static groups
      {3, 256, true, false, false, 300},                                      // group wider than block
  };
  const int64_t rows = 100;  // not a multiple of the CPU kernel's 16-row tile
  for (const Case& c : cases) {
    at::manual_seed(7);
    const at::Tensor W = at::randn({rows, c.cols});
    const at::Tensor H = make_hessian(c.cols, 512, 11);
    GptqConfig config;
    config.quant.bits = c.bits;
    config.quant.group_size = c.group_size;
    config.quant.sym = c.sym;
    config.desc_act = c.desc_act;
    config.static_groups = c.static_groups;
    const QuantizedWeight fast = gptq_quantize(W, H, config);
    const QuantizedWeight tensor_ops =
        detail::gptq_quantize_with(W, H, config, detail::BlockLoop::kTensorOps);
    const QuantizedWeight naive = testing::naive_gptq(W, H, config);
    expect_consistent(fast, rows, c.cols, c.bits);
    expect_consistent(tensor_ops, rows, c.cols, c.bits);
    expect_agrees(fast, naive, "fused " + describe(c));
    expect_agrees(tensor_ops, naive, "tensor ops " + describe(c));
  }
}

TEST(Gptq, MseGridAgreesWithNaive) {
  at::manual_seed(3);
  const at::Tensor W = at::randn({64, 256});
  const at::Tensor H = make_hessian(256, 512, 5);
  GptqConfig config;
  config.quant.mse = true;
  config.quant.sym = false;
  config.desc_act = true;
  const QuantizedWeight fast = gptq_quantize(W, H, config);
  const QuantizedWeight naive = testing::naive_gptq(W, H, config);
  expect_agrees(fast, naive, "mse");
}

TEST(Gptq, GptqBeatsRtnOnItsOwnObjective) {
  at::manual_seed(4);
  const at::Tensor W = at::randn({128, 256});
  const at::Tensor H = make_hessian(256, 1024, 6);
  GptqConfig config;
  config.damp_percent = 0;  // compare on the exact proxy loss tr((W-Q) H (W-Q)^T)
  const QuantizedWeight gptq = gptq_quantize(W, H, config);
  const QuantizedWeight rtn = rtn_quantize(W, config.quant);
  auto proxy = [&](const at::Tensor& Q) {
    const at::Tensor delta = W - Q;
    return (delta.mm(H) * delta).sum().item<double>();
  };
  EXPECT_LT(proxy(gptq.dequantized), 0.9 * proxy(rtn.dequantized));
}

TEST(Gptq, WeightsOnTheGridComeBackUnchanged) {
  const int64_t rows = 32, cols = 256;
  for (int group_size : {-1, 128}) {
    at::manual_seed(9);
    const int maxq = 15;
    const int64_t n_groups = group_size == -1 ? 1 : cols / group_size;
    const int64_t width = group_size == -1 ? cols : group_size;
    // Per row and group: a power-of-two scale and a zero point inside the
    // range, with codes 0 and maxq present so min-max recovers that grid.
    at::Tensor codes = at::randint(0, maxq + 1, {rows, cols});
    codes.index_put_({at::indexing::Slice(), at::arange(0, cols, width)}, 0);
    codes.index_put_({at::indexing::Slice(), at::arange(1, cols, width)}, maxq);
    const at::Tensor zero = at::randint(1, maxq, {rows, n_groups});
    const at::Tensor scale = at::pow(2.0, -at::randint(2, 8, {rows, n_groups}));
    const at::Tensor g = at::arange(cols).div(width, "floor");
    const at::Tensor W = scale.index_select(1, g) * (codes - zero.index_select(1, g));
    GptqConfig config;
    config.quant.group_size = group_size;
    config.quant.sym = false;
    const at::Tensor H = make_hessian(cols, 512, 1);
    // Act-order with dynamic groups regroups columns, so a grid per original
    // group is only kept without act-order or with static groups.
    for (bool desc_act : {false, true}) {
      config.desc_act = desc_act;
      config.static_groups = desc_act && group_size != -1;
      const QuantizedWeight q = gptq_quantize(W, H, config);
      EXPECT_TRUE(q.dequantized.equal(W)) << "group " << group_size << " desc_act " << desc_act;
      EXPECT_EQ(q.loss, 0.0);
    }
  }
}

TEST(Gptq, ActOrderAndStaticGroupsGiveValidGroupIndex) {
  const int64_t rows = 16, cols = 200, group_size = 64;
  at::manual_seed(2);
  const at::Tensor W = at::randn({rows, cols});
  const at::Tensor H = make_hessian(cols, 400, 3);
  GptqConfig config;
  config.quant.group_size = group_size;
  config.desc_act = true;
  const QuantizedWeight act = gptq_quantize(W, H, config);
  expect_consistent(act, rows, cols, 4);
  const at::Tensor perm = std::get<1>(at::sort(H.diagonal(), true, 0, true));
  const at::Tensor expected = at::argsort(perm).div(group_size, "floor").to(at::kInt);
  EXPECT_TRUE(act.g_idx.equal(expected));
  EXPECT_TRUE(at::bincount(act.g_idx.to(at::kLong)).equal(at::tensor({64L, 64L, 64L, 8L})));
  config.static_groups = true;
  const QuantizedWeight fixed = gptq_quantize(W, H, config);
  expect_consistent(fixed, rows, cols, 4);
  EXPECT_TRUE(fixed.g_idx.equal(at::arange(cols).div(group_size, "floor").to(at::kInt)));
}

TEST(Gptq, DeadColumnsAreZeroed) {
  const int64_t rows = 32, cols = 128;
  at::manual_seed(5);
  const at::Tensor W = at::randn({rows, cols});
  at::Tensor H = make_hessian(cols, 400, 8);
  for (int64_t dead : {0, 17, 127}) {
    H.select(0, dead).zero_();
    H.select(1, dead).zero_();
  }
  for (bool desc_act : {false, true}) {
    GptqConfig config;
    config.desc_act = desc_act;
    config.quant.group_size = 32;
    const QuantizedWeight q = gptq_quantize(W, H, config);
    expect_consistent(q, rows, cols, 4);
    for (int64_t dead : {0, 17, 127}) {
      EXPECT_EQ(q.dequantized.select(1, dead).abs().max().item<float>(), 0.0f);
    }
    expect_agrees(q, testing::naive_gptq(W, H, config), "dead columns");
  }
}

TEST(Gptq, IndefiniteHessianRaisesDampAndReportsIt) {
  const int64_t cols = 64;
  at::manual_seed(6);
  const at::Tensor basis = std::get<0>(at::linalg_qr(at::randn({cols, cols})));
  at::Tensor eigenvalues = at::ones({cols});
  eigenvalues[0] = -0.025;  // needs damp > 0.025 * mean(diag) ~ 0.025
  at::Tensor H = basis.mm(at::diag(eigenvalues)).mm(basis.t());
  H = (H + H.t()) / 2;
  const at::Tensor W = at::randn({8, cols});
  GptqConfig config;
  config.quant.group_size = -1;
  const QuantizedWeight q = gptq_quantize(W, H, config);
  EXPECT_GT(q.damp_used, config.damp_percent);
  EXPECT_GE(q.damp_used, 0.03 - 1e-12);
  EXPECT_TRUE(at::isfinite(q.dequantized).all().item<bool>());
  config.max_damp_retries = 1;
  EXPECT_THROW(gptq_quantize(W, H, config), NumericalError);
}

// A broken Hessian comes from the calibration forward (overflowing
// activations), not from the user: a numerical failure (exit 1), not exit 2.
TEST(Gptq, BrokenHessianIsNumericalError) {
  at::manual_seed(1);
  const at::Tensor W = at::randn({8, 32});
  const at::Tensor H = make_hessian(32, 64, 2);
  GptqConfig config;
  config.quant.group_size = 16;
  at::Tensor nan_H = H.clone();
  nan_H[3][5] = std::numeric_limits<float>::quiet_NaN();
  nan_H[5][3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(gptq_quantize(W, nan_H, config), NumericalError);
  at::Tensor skew_H = H.clone();
  skew_H[0][1] += 1.0;
  EXPECT_THROW(gptq_quantize(W, skew_H, config), NumericalError);
  try {
    gptq_quantize(W, nan_H, config);
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), 1);
    EXPECT_EQ(e.describe().rfind("numerical failure: ", 0), 0u) << e.describe();
  }
}

TEST(Gptq, BadInputIsInputError) {
  at::manual_seed(1);
  const at::Tensor W = at::randn({8, 32});
  const at::Tensor H = make_hessian(32, 64, 2);
  GptqConfig config;
  config.quant.group_size = 16;
  EXPECT_NO_THROW(gptq_quantize(W, H, config));

  EXPECT_THROW(gptq_quantize(W, make_hessian(31, 64, 2), config), InputError);
  EXPECT_THROW(gptq_quantize(W.reshape({8, 4, 8}), H, config), InputError);
  EXPECT_THROW(gptq_quantize(W, H.to(at::kDouble), config), InputError);
  at::Tensor nan_W = W.clone();
  nan_W[0][0] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(gptq_quantize(nan_W, H, config), InputError);

  GptqConfig bad = config;
  bad.quant.bits = 5;
  EXPECT_THROW(gptq_quantize(W, H, bad), InputError);
  bad = config;
  bad.quant.group_size = -2;
  EXPECT_THROW(gptq_quantize(W, H, bad), InputError);
  bad = config;
  bad.quant.group_size = 0;
  EXPECT_THROW(gptq_quantize(W, H, bad), InputError);
  bad = config;
  bad.block_size = 0;
  EXPECT_THROW(gptq_quantize(W, H, bad), InputError);
  bad = config;
  bad.quant.bits = 5;
  EXPECT_THROW(rtn_quantize(W, bad.quant), InputError);
}

TEST(Gptq, Bf16WeightsAreAccepted) {
  at::manual_seed(12);
  const at::Tensor W = at::randn({16, 64}).to(at::kBFloat16);
  const at::Tensor H = make_hessian(64, 128, 4);
  GptqConfig config;
  config.quant.group_size = 32;
  const QuantizedWeight q = gptq_quantize(W, H, config);
  expect_consistent(q, 16, 64, 4);
  expect_agrees(q, testing::naive_gptq(W, H, config), "bf16");
}

}  // namespace
}  // namespace gptq::solver
