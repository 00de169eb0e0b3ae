// Round-to-nearest on the GPTQ grid: every group's grid from the untouched
// weight, each value rounded on its own (no error feedback).
#include <ATen/ATen.h>

#include <optional>

#include "gptq/core/error.h"
#include "gptq/solver/gptq.h"

namespace gptq::solver {
namespace {

QuantizedWeight rtn_impl(const at::Tensor& W_in, const GptqConfig& gptq, const at::Tensor* H) {
  const QuantConfig& config = gptq.quant;
  if (!gptq.grid) validate(config);
  GPTQ_CHECK(config.group_size == -1 || config.group_size > 0, "group_size must be -1 or positive, got ",
             config.group_size);
  const std::shared_ptr<const QuantGrid> grid = grid_of(gptq);
  GPTQ_CHECK(W_in.defined() && W_in.dim() == 2 && W_in.size(0) > 0 && W_in.size(1) > 0,
             "weight must be a non-empty 2-D tensor, got shape ",
             W_in.defined() ? W_in.sizes() : at::IntArrayRef{});
  GPTQ_CHECK(at::isFloatingType(W_in.scalar_type()), "weight must be floating point, got ",
             W_in.scalar_type());
  const at::Tensor W = W_in.to(at::kFloat).contiguous();
  GPTQ_CHECK(at::isfinite(W).all().item<bool>(), "weight has NaN or Inf entries");
  const int64_t n_rows = W.size(0), n_cols = W.size(1);
  const int64_t group_size = config.group_size > 0 ? config.group_size : n_cols;
  const int64_t n_groups = (n_cols + group_size - 1) / group_size;
  at::Tensor n_raised = at::zeros({n_rows}, W.options().dtype(at::kLong));

  at::Tensor scales = at::empty({n_groups, n_rows}, W.options());
  at::Tensor zeros = at::empty({n_groups, n_rows}, W.options());
  at::Tensor codes = at::empty({n_rows, n_cols}, W.options());
  // Grids fitted jointly (ggml K-quants) weigh columns by diag(H) when there is one.
  const at::Tensor importance =
      H != nullptr && H->defined() ? H->diagonal().to(W.device(), at::kFloat).contiguous() : at::Tensor();
  const std::optional<QuantParams> joint =
      config.group_size > 0 ? grid->fit_all(W, importance, group_size) : std::nullopt;
  GPTQ_ASSERT(joint || !grid->fits_jointly(), "a grid that fits jointly returned no fit_all");
  for (int64_t group = 0; group < n_groups; ++group) {
    const int64_t start = group * group_size;
    const at::Tensor columns = W.narrow(1, start, std::min(group_size, n_cols - start));
    const QuantParams params = joint ? QuantParams{joint->scale[group], joint->zero[group], at::Tensor()}
                                     : grid->fit(columns);
    scales.select(0, group).copy_(params.scale);
    zeros.select(0, group).copy_(params.zero);
    if (params.raised.defined()) n_raised.add_(params.raised);
    codes.narrow(1, start, columns.size(1))
        .copy_(grid->quantize(columns, params.scale.unsqueeze(1), params.zero.unsqueeze(1)));
  }
  const at::Tensor g_idx =
      at::arange(n_cols, W.options().dtype(at::kLong)).div(group_size, "floor").to(at::kInt);
  QuantizedWeight result;
  const at::Tensor g_long = g_idx.to(at::kLong);
  result.dequantized = grid->dequantize(codes, scales.index_select(0, g_long).t(),
                                        zeros.index_select(0, g_long).t());
  const at::Tensor sq_err = (W - result.dequantized).square();
  if (H != nullptr) {
    GPTQ_CHECK(H->dim() == 2 && H->size(0) == n_cols && H->size(1) == n_cols,
               "hessian must be [", n_cols, ", ", n_cols, "], got ", H->sizes());
    // row_loss holds 2 * each row's share, as GPTQ's.
    result.row_loss = (sq_err * H->diagonal().to(W.device(), at::kFloat).unsqueeze(0)).sum(1);
    result.loss = result.row_loss.sum().item<double>() / 2;
  } else {
    result.row_loss = sq_err.sum(1) * 2;
    result.loss = sq_err.sum().item<double>();
  }
  result.zero_raised = n_raised;
  if (!std::isfinite(result.loss) || !at::isfinite(scales).all().item<bool>()) {
    throw NumericalError("rtn produced a non-finite loss or scale (weights out of range)");
  }
  result.codes = codes.to(at::kByte);
  result.scales = scales;
  result.grid_zeros = zeros;
  result.zeros = zeros.to(at::kInt);
  result.g_idx = g_idx;
  return result;
}

GptqConfig with_quant(const QuantConfig& quant) {
  GptqConfig config;
  config.quant = quant;
  return config;
}

}  // namespace

QuantizedWeight rtn_quantize(const at::Tensor& W, const QuantConfig& config) {
  return rtn_impl(W, with_quant(config), nullptr);
}

QuantizedWeight rtn_quantize(const at::Tensor& W, const QuantConfig& config, const at::Tensor& H) {
  return rtn_impl(W, with_quant(config), &H);
}

QuantizedWeight rtn_quantize(const at::Tensor& W, const GptqConfig& config, const at::Tensor& H) {
  return rtn_impl(W, config, H.defined() ? &H : nullptr);
}

}  // namespace gptq::solver
