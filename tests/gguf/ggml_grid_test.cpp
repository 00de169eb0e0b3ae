// The ggml grids: values the codec stores exactly, ggml's fitting rules, and
// GPTQ/RTN running on them end to end (codes -> bytes -> ggml's decode).
#include "gptq/gguf/ggml_grid.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "gptq/core/error.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/solver/gptq.h"

namespace gptq::gguf {
namespace {

const std::vector<GgmlType> kQuantTypes = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0,
                                           GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

// Rows meant to break a codec: zeros, constants, one huge outlier,
// negative-only, fp16-subnormal scales, sparse rows, plain Gaussian rows.
at::Tensor adversarial_rows(int64_t n_cols, int64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> rows;
  rows.push_back(at::zeros({n_cols}));
  rows.push_back(at::full({n_cols}, 0.75f));
  rows.push_back(at::full({n_cols}, -3.5f));
  at::Tensor outlier = at::randn({n_cols}) * 0.01f;
  outlier[7] = 300.0f;
  rows.push_back(outlier);
  rows.push_back(-at::rand({n_cols}) - 0.25f);
  rows.push_back(at::rand({n_cols}) + 1.0f);
  rows.push_back(at::randn({n_cols}) * 1e-6f);
  rows.push_back(at::randn({n_cols}) * 1e-9f);
  at::Tensor sparse = at::zeros({n_cols});
  sparse.index_put_({at::indexing::Slice(0, at::indexing::None, 37)}, 1.0f);
  rows.push_back(sparse);
  at::Tensor half_zero = at::randn({n_cols});
  half_zero.narrow(0, 0, n_cols / 2).zero_();
  rows.push_back(half_zero);
  for (int idx = 0; idx < 6; ++idx) rows.push_back(at::randn({n_cols}) * (0.02f * (idx + 1)));
  return at::stack(rows);
}

// A trained-like row set: heavy tails (Student-t ish) and per-row scales.
at::Tensor trained_like(int64_t n_rows, int64_t n_cols, int64_t seed) {
  at::manual_seed(seed);
  const at::Tensor z = at::randn({n_rows, n_cols});
  const at::Tensor chi = at::randn({n_rows, n_cols, 3}).square().mean(2).sqrt();
  const at::Tensor row_scale = at::rand({n_rows, 1}) * 0.05f + 0.005f;
  return z / chi * row_scale;
}

// Per-group grid from fit_all or fit, as the solver does, then RTN codes.
struct RoundTrip {
  at::Tensor codes, scales, zeros, dequantized;
};

RoundTrip round_to_grid(GgmlType type, const at::Tensor& W, const at::Tensor& importance) {
  const auto grid = make_ggml_grid(type);
  const int64_t group_size = ggml_group_size(type);
  const int64_t n_rows = W.size(0), n_groups = W.size(1) / group_size;
  RoundTrip out;
  const std::optional<solver::QuantParams> joint = grid->fit_all(W, importance, group_size);
  EXPECT_EQ(joint.has_value(), grid->fits_jointly());
  out.scales = at::empty({n_groups, n_rows});
  out.zeros = at::empty({n_groups, n_rows});
  out.codes = at::empty({n_rows, W.size(1)});
  for (int64_t group = 0; group < n_groups; ++group) {
    const at::Tensor columns = W.narrow(1, group * group_size, group_size);
    const solver::QuantParams params =
        joint ? solver::QuantParams{joint->scale[group], joint->zero[group], at::Tensor()}
              : grid->fit(columns);
    out.scales[group].copy_(params.scale);
    out.zeros[group].copy_(params.zero);
    out.codes.narrow(1, group * group_size, group_size)
        .copy_(grid->quantize(columns, params.scale.unsqueeze(1), params.zero.unsqueeze(1)));
  }
  const at::Tensor g_idx = at::arange(W.size(1)).div(group_size, "floor");
  out.dequantized = grid->dequantize(out.codes, out.scales.index_select(0, g_idx).t(),
                                     out.zeros.index_select(0, g_idx).t());
  return out;
}

// Bit patterns, so that -0.0 and 0.0 (and NaN) are told apart.
void expect_same_bits(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const at::Tensor differ = a.contiguous().view(at::kInt) != b.contiguous().view(at::kInt);
  if (!differ.any().item<bool>()) return;
  const at::Tensor first = differ.nonzero()[0];
  ADD_FAILURE() << what << ": " << differ.sum().item<int64_t>() << " values differ, first at ("
                << first[0].item<int64_t>() << ", " << first[1].item<int64_t>() << "): "
                << a.masked_select(differ)[0].item<float>() << " vs "
                << b.masked_select(differ)[0].item<float>();
}

TEST(GgmlGridTest, GridValuesAreWhatTheCodecDecodesOnEveryType) {
  const at::Tensor W = adversarial_rows(512, 1);
  at::manual_seed(2);
  const at::Tensor importance = at::rand({512}) * 4.0f + 0.01f;
  for (GgmlType type : kQuantTypes) {
    for (bool weighted : {false, true}) {
      const std::string what = std::string(type_info(type).name) + (weighted ? " imatrix" : "");
      const RoundTrip trip = round_to_grid(type, W, weighted ? importance : at::Tensor());
      EXPECT_TRUE(at::isfinite(trip.dequantized).all().item<bool>()) << what;
      const at::Tensor bytes = encode_rows(type, trip.codes.to(at::kByte), trip.scales, trip.zeros);
      ASSERT_EQ(bytes.size(1), row_bytes(type, 512)) << what;
      expect_same_bits(decode_rows(type, bytes, 512), trip.dequantized, what);
      // Rows 0 (zeros) decodes to zeros; the constant rows stay within a step.
      EXPECT_TRUE(trip.dequantized[0].eq(0).all().item<bool>()) << what;
      EXPECT_LT((trip.dequantized[2] + 3.5f).abs().max().item<float>(), 0.25f) << what;
      // Codes within the grid and the huge outlier itself kept.
      EXPECT_LE(trip.codes.max().item<float>(), (1 << make_ggml_grid(type)->bits()) - 1) << what;
      EXPECT_NEAR(trip.dequantized[3][7].item<float>(), 300.0f, 300.0f / 7) << what;
    }
  }
}

TEST(GgmlGridTest, LegacyFitsFollowGgmlReference) {
  const at::Tensor x = at::tensor({0.5f, -2.0f, 1.0f, 2.0f}).reshape({1, 4});
  // Q4_0: the first value of largest magnitude, divided by -8.
  auto q4_0 = make_ggml_grid(GgmlType::kQ4_0)->fit(x);
  EXPECT_EQ(q4_0.scale.item<float>(), 0.25f);
  EXPECT_EQ(q4_0.zero.item<float>(), 8.0f);
  auto q8_0 = make_ggml_grid(GgmlType::kQ8_0)->fit(x);
  EXPECT_EQ(q8_0.scale.item<float>(), static_cast<float>(c10::Half(2.0f / 127.0f)));
  EXPECT_EQ(q8_0.zero.item<float>(), 128.0f);
  auto q4_1 = make_ggml_grid(GgmlType::kQ4_1)->fit(x);
  EXPECT_EQ(q4_1.scale.item<float>(), static_cast<float>(c10::Half(4.0f / 15.0f)));
  EXPECT_EQ(q4_1.zero.item<float>(), -2.0f);
  // Q4_0's grid runs from -8 d to 7 d: the value of largest magnitude is
  // code 0, its mirror image clips to 15.
  const at::Tensor codes = make_ggml_grid(GgmlType::kQ4_0)
                               ->quantize(x, q4_0.scale.unsqueeze(1), q4_0.zero.unsqueeze(1));
  EXPECT_TRUE(at::equal(codes, at::tensor({10.0f, 0.0f, 12.0f, 15.0f}).reshape({1, 4})));
}

TEST(GgmlGridTest, KQuantGridsFitOnlyJointly) {
  for (GgmlType type : {GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    const auto grid = make_ggml_grid(type);
    EXPECT_TRUE(grid->fits_jointly());
    EXPECT_FALSE(grid->affine().has_value());
    EXPECT_THROW(grid->fit(at::randn({4, 32})), Error);
    EXPECT_THROW(grid->fit_all(at::randn({4, 128}), at::Tensor(), ggml_group_size(type)), InputError);
    EXPECT_THROW(grid->fit_all(at::randn({4, 256}), at::Tensor(), 64), InputError);
  }
  EXPECT_FALSE(make_ggml_grid(GgmlType::kQ4_0)->fits_jointly());
  EXPECT_THROW(make_ggml_grid(GgmlType::kF16), InputError);
}

// GPTQ's updates push values below a group's minimum: such a value rounds to
// -0, which must still be code +0 (ggml decodes +0 there, not -0).
TEST(GgmlGridTest, ValuesRoundingToMinusZeroGetCodePlusZero) {
  const auto grid = make_ggml_grid(GgmlType::kQ4_K);
  const at::Tensor x = at::tensor({-0.01f, -0.3f, 0.2f}).reshape({1, 3});
  const at::Tensor scale = at::full({1, 1}, 1.0f), zero = at::zeros({1, 1});
  const at::Tensor codes = grid->quantize(x, scale, zero);
  const at::Tensor values = grid->dequantize(codes, scale, zero);
  EXPECT_TRUE(at::equal(values.view(at::kInt), at::zeros({1, 3}).view(at::kInt)));
}

TEST(GgmlGridTest, QuantizeTakesRowScalesAsTheSolverPassesThem) {
  const auto grid = make_ggml_grid(GgmlType::kQ6_K);
  const at::Tensor W = trained_like(8, 256, 3);
  const auto params = *grid->fit_all(W, at::Tensor(), 16);
  const at::Tensor column = W.select(1, 5);  // group 0
  const at::Tensor as_vector = grid->quantize(column, params.scale[0], params.zero[0]);
  const at::Tensor as_matrix =
      grid->quantize(column.unsqueeze(1), params.scale[0].unsqueeze(1), params.zero[0].unsqueeze(1));
  EXPECT_TRUE(at::equal(as_vector, as_matrix.squeeze(1)));
  EXPECT_EQ(as_vector.dim(), 1);
}

// K-quant super-blocks of ggml's _ref path keep ggml's own split: the largest
// sub-scale is 63, so d = max(scale) / 63 is stored.
TEST(GgmlGridTest, RefPathStoresDAsTheLargestScaleOver63) {
  const at::Tensor W = trained_like(4, 256, 4);
  const auto grid = make_ggml_grid(GgmlType::kQ4_K);
  const auto params = *grid->fit_all(W, at::Tensor(), 32);
  const RoundTrip trip = round_to_grid(GgmlType::kQ4_K, W, at::Tensor());
  const at::Tensor bytes = encode_rows(GgmlType::kQ4_K, trip.codes.to(at::kByte), trip.scales, trip.zeros);
  for (int64_t row = 0; row < 4; ++row) {
    uint16_t bits = bytes[row][0].item<uint8_t>() | (bytes[row][1].item<uint8_t>() << 8);
    const float d = static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
    EXPECT_EQ(d * 63.0f, params.scale.select(1, row).max().item<float>());
  }
}

double relative_mse(GgmlType type, const at::Tensor& W) {
  const at::Tensor decoded = decode_rows(type, quantize_rows(type, W, at::Tensor()), W.size(1));
  return ((decoded - W).square().mean() / W.var()).item<double>();
}

TEST(GgmlGridTest, RoundToNearestErrorFollowsTheBitBudget) {
  at::manual_seed(5);
  const at::Tensor W = at::randn({64, 2048});
  const double q8_0 = relative_mse(GgmlType::kQ8_0, W), q6_k = relative_mse(GgmlType::kQ6_K, W);
  const double q5_k = relative_mse(GgmlType::kQ5_K, W), q4_k = relative_mse(GgmlType::kQ4_K, W);
  const double q4_0 = relative_mse(GgmlType::kQ4_0, W), q4_1 = relative_mse(GgmlType::kQ4_1, W);
  EXPECT_LT(q8_0, 1e-4);
  EXPECT_LT(q6_k, 1e-3);
  EXPECT_LT(q5_k, 4e-3);
  EXPECT_LT(q4_k, 1.5e-2);
  EXPECT_LT(q4_0, 2e-2);
  EXPECT_LT(q4_1, 2e-2);
  EXPECT_LT(q8_0, q6_k);
  EXPECT_LT(q6_k, q5_k);
  EXPECT_LT(q5_k, q4_k);
  EXPECT_LT(q4_k, q4_0);  // the K-quant searches beat plain absmax
}

// The importance path spends precision where importance is: its weighted
// error is below the unweighted fit's on the same rows.
TEST(GgmlGridTest, ImportanceLowersTheWeightedError) {
  const at::Tensor W = trained_like(64, 1024, 6);
  at::manual_seed(7);
  const at::Tensor importance = at::rand({1024}).pow(4) * 100.0f + 1e-3f;
  for (GgmlType type : {GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    auto weighted_error = [&](const at::Tensor& imp) {
      const at::Tensor deq = round_to_grid(type, W, imp).dequantized;
      return ((deq - W).square() * importance).sum().item<double>();
    };
    EXPECT_LT(weighted_error(importance), weighted_error(at::Tensor())) << type_info(type).name;
  }
}

// The solver on these grids (RTN and GPTQ): its codes and floats encode to
// bytes that ggml decodes to exactly the weights later blocks see.
TEST(GgmlGridTest, SolverOutputEncodesToItsOwnDequantizedWeights) {
  const at::Tensor W = trained_like(48, 512, 8);
  at::manual_seed(9);
  const at::Tensor X = at::randn({1024, 512}) * (at::rand({512}) + 0.1f);
  const at::Tensor H = 2.0f * X.t().mm(X) / 1024.0f;
  for (GgmlType type : kQuantTypes) {
    solver::GptqConfig config;
    config.quant.group_size = static_cast<int>(ggml_group_size(type));
    config.grid = make_ggml_grid(type);
    const solver::QuantizedWeight rtn = solver::rtn_quantize(W, config, H);
    const solver::QuantizedWeight gptq = solver::gptq_quantize(W, H, config);
    for (const solver::QuantizedWeight* result : {&rtn, &gptq}) {
      const at::Tensor bytes = encode_rows(type, result->codes, result->scales, result->grid_zeros);
      expect_same_bits(decode_rows(type, bytes, 512), result->dequantized,
                       std::string(type_info(type).name) + (result == &rtn ? " rtn" : " gptq"));
    }
    // GPTQ's error compensation pays off on the grid it runs on.
    EXPECT_LT(gptq.loss, rtn.loss) << type_info(type).name;
  }
}

TEST(GgmlGridTest, KQuantFitOfALargeWeightIsFast) {
  at::manual_seed(10);
  const at::Tensor W = at::randn({1024, 14336}) * 0.02f;
  for (GgmlType type : {GgmlType::kQ4_K, GgmlType::kQ6_K}) {
    const auto start = std::chrono::steady_clock::now();
    make_ggml_grid(type)->fit_all(W, at::Tensor(), ggml_group_size(type));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // A quarter of a 4096 x 14336 weight; generous for a shared 2-core box.
    EXPECT_LT(seconds, 5.0) << type_info(type).name;
    std::printf("%s fit_all 1024x14336: %.2f s\n", std::string(type_info(type).name).c_str(), seconds);
  }
}

}  // namespace
}  // namespace gptq::gguf
