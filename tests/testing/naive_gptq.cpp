#include "testing/naive_gptq.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"

#include <limits>

namespace gptq::testing {
namespace {

// Reference quant.py, written out again so the tests do not lean on the
// solver's own grid code.
at::Tensor quantize(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero, int maxq) {
  return at::clamp(at::round(x / scale) + zero, 0, maxq);
}

std::pair<at::Tensor, at::Tensor> reference_find_params(const at::Tensor& x,
                                                        const solver::QuantConfig& quant) {
  const int maxq = (1 << quant.bits) - 1;
  const at::Tensor zero_row = at::zeros({x.size(0)});
  at::Tensor xmin = at::minimum(std::get<0>(x.min(1)), zero_row);
  at::Tensor xmax = at::maximum(std::get<0>(x.max(1)), zero_row);
  if (quant.sym) {
    xmax = at::maximum(xmin.abs(), xmax);
    const at::Tensor negative = xmin < 0;
    xmin.index_put_({negative}, -xmax.index({negative}));
  }
  const at::Tensor both_zero = (xmin == 0) & (xmax == 0);
  xmin.index_put_({both_zero}, -1.0);
  xmax.index_put_({both_zero}, 1.0);
  at::Tensor scale = (xmax - xmin) / maxq;
  at::Tensor zero = quant.sym ? at::full_like(scale, (maxq + 1) / 2) : at::round(-xmin / scale);
  if (quant.mse) {
    at::Tensor best = at::full({x.size(0)}, std::numeric_limits<float>::infinity());
    for (int i = 0; i < 80; ++i) {
      const double p = 1 - i / 100.0;
      const at::Tensor xmin1 = p * xmin, xmax1 = p * xmax;
      const at::Tensor scale1 = (xmax1 - xmin1) / maxq;
      const at::Tensor zero1 = quant.sym ? zero : at::round(-xmin1 / scale1);
      const at::Tensor q = quantize(x, scale1.unsqueeze(1), zero1.unsqueeze(1), maxq);
      const at::Tensor err =
          (scale1.unsqueeze(1) * (q - zero1.unsqueeze(1)) - x).abs().pow(2.4).sum(1);
      const at::Tensor better = err < best;
      best.index_put_({better}, err.index({better}));
      scale.index_put_({better}, scale1.index({better}));
      zero.index_put_({better}, zero1.index({better}));
    }
  }
  return {scale, zero};
}

}  // namespace

solver::QuantizedWeight naive_gptq(const at::Tensor& W_in, const at::Tensor& H_in,
                                   const solver::GptqConfig& config) {
  const solver::QuantConfig& quant = config.quant;
  const int maxq = (1 << quant.bits) - 1;
  const int64_t rows = W_in.size(0), cols = W_in.size(1);
  const int64_t group_size = quant.group_size > 0 ? quant.group_size : cols;
  const int64_t n_groups = (cols + group_size - 1) / group_size;
  at::Tensor W = W_in.to(at::kFloat).clone();
  at::Tensor H = H_in.to(at::kFloat).clone();
  at::Tensor scales = at::zeros({n_groups, rows});
  at::Tensor zeros = at::zeros({n_groups, rows});
  auto set_group = [&](const at::Tensor& columns, int64_t group) {
    auto [scale, zero] = reference_find_params(columns, quant);
    scales[group].copy_(scale);
    zeros[group].copy_(zero);
  };
  if (quant.group_size == -1) set_group(W, 0);

  const at::Tensor dead = H.diagonal() == 0;
  H.diagonal().masked_fill_(dead, 1.0);
  W.masked_fill_(dead.unsqueeze(0), 0.0);
  if (config.static_groups) {
    for (int64_t g = 0; g < n_groups; ++g) {
      set_group(W.narrow(1, g * group_size, std::min(group_size, cols - g * group_size)), g);
    }
  }
  at::Tensor perm = at::arange(cols, at::kLong);
  if (config.desc_act) {
    perm = std::get<1>(at::sort(H.diagonal(), /*stable=*/true, 0, /*descending=*/true));
    W = W.index_select(1, perm);
    H = H.index_select(0, perm).index_select(1, perm);
  }

  at::Tensor Hinv;
  double damp = config.damp_percent;
  const double mean_diag = H.diagonal().mean().item<double>();
  for (int attempt = 0; attempt <= config.max_damp_retries; ++attempt) {
    damp = config.damp_percent + attempt * config.damp_increment;
    const at::Tensor damped = H + damp * mean_diag * at::eye(cols);
    auto [L, info] = at::linalg_cholesky_ex(damped);
    if (info.item<int64_t>() != 0) continue;
    Hinv = at::linalg_cholesky(at::cholesky_inverse(L), /*upper=*/true);
    break;
  }
  if (!Hinv.defined()) throw NumericalError("naive gptq: cholesky failed");

  at::Tensor codes = at::zeros({rows, cols});
  at::Tensor Q = at::zeros({rows, cols});
  at::Tensor g_idx_perm = at::zeros({cols}, at::kLong);
  double loss = 0;
  at::Tensor block_start_W;
  for (int64_t col = 0; col < cols; ++col) {
    if (col % config.block_size == 0) block_start_W = W.clone();
    int64_t group = 0;
    if (quant.group_size > 0) {
      if (config.static_groups) {
        group = perm[col].item<int64_t>() / group_size;
      } else {
        group = col / group_size;
        if (col % group_size == 0) {
          set_group(block_start_W.narrow(1, col, std::min(group_size, cols - col)), group);
        }
      }
    }
    g_idx_perm[col] = group;
    const at::Tensor w = W.select(1, col);
    const at::Tensor d = Hinv[col][col];
    const at::Tensor q = quantize(w, scales[group], zeros[group], maxq);
    const at::Tensor deq = scales[group] * (q - zeros[group]);
    codes.select(1, col).copy_(q);
    Q.select(1, col).copy_(deq);
    loss += ((w - deq).square() / d.square()).sum().item<double>() / 2;
    const at::Tensor err = (w - deq) / d;
    W.narrow(1, col, cols - col).sub_(err.unsqueeze(1) * Hinv[col].narrow(0, col, cols - col).unsqueeze(0));
  }
  const at::Tensor inverse = at::argsort(perm);
  solver::QuantizedWeight result;
  result.codes = codes.index_select(1, inverse).to(at::kByte);
  result.dequantized = Q.index_select(1, inverse);
  result.scales = scales;
  result.zeros = zeros.to(at::kInt);
  result.g_idx = g_idx_perm.index_select(0, inverse).to(at::kInt);
  result.loss = loss;
  result.damp_used = damp;
  return result;
}

}  // namespace gptq::testing
