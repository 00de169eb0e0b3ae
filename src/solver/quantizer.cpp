#include "gptq/solver/quantizer.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"

namespace gptq::solver {
namespace {

constexpr int kMseGrid = 100;
constexpr double kMseMaxShrink = 0.8;
constexpr double kMseNorm = 2.4;

}  // namespace

void validate(const QuantConfig& config) {
  GPTQ_CHECK(config.bits == 2 || config.bits == 3 || config.bits == 4 || config.bits == 8,
             "bits must be one of 2, 3, 4, 8, got ", config.bits);
  GPTQ_CHECK(config.group_size == -1 || config.group_size > 0,
             "group_size must be -1 (one group per row) or positive, got ", config.group_size);
}

int max_code(const QuantConfig& config) { return (1 << config.bits) - 1; }

at::Tensor quantize_codes(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero,
                          int maxq) {
  return at::clamp(at::round(x / scale) + zero, 0, maxq);
}

at::Tensor dequantize_codes(const at::Tensor& codes, const at::Tensor& scale,
                            const at::Tensor& zero) {
  return scale * (codes - zero);
}

QuantParams find_params(const at::Tensor& x, const QuantConfig& config) {
  GPTQ_ASSERT(x.dim() == 2 && x.size(1) > 0 && x.scalar_type() == at::kFloat);
  const int maxq = max_code(config);
  auto [row_min, row_max] = at::aminmax(x, /*dim=*/1);
  at::Tensor xmin = at::clamp_max(row_min, 0);
  at::Tensor xmax = at::clamp_min(row_max, 0);
  if (config.sym) {
    xmax = at::maximum(xmin.abs(), xmax);
    xmin = at::where(xmin < 0, -xmax, xmin);
  }
  const at::Tensor empty_range = (xmin == 0).logical_and(xmax == 0);
  xmin = at::where(empty_range, at::full_like(xmin, -1), xmin);
  xmax = at::where(empty_range, at::full_like(xmax, 1), xmax);

  QuantParams params;
  params.scale = (xmax - xmin) / maxq;
  params.zero = config.sym ? at::full_like(params.scale, (maxq + 1) / 2)
                           : at::round(-xmin / params.scale);
  if (!config.mse) return params;

  at::Tensor best = at::full_like(params.scale, std::numeric_limits<float>::infinity());
  for (int step = 0; step < static_cast<int>(kMseMaxShrink * kMseGrid); ++step) {
    const double shrink = 1.0 - static_cast<double>(step) / kMseGrid;
    const at::Tensor xmin1 = xmin * shrink;
    const at::Tensor xmax1 = xmax * shrink;
    const at::Tensor scale1 = (xmax1 - xmin1) / maxq;
    const at::Tensor zero1 = config.sym ? params.zero : at::round(-xmin1 / scale1);
    const at::Tensor s = scale1.unsqueeze(1);
    const at::Tensor z = zero1.unsqueeze(1);
    const at::Tensor deq = dequantize_codes(quantize_codes(x, s, z, maxq), s, z);
    const at::Tensor err = (deq - x).abs_().pow_(kMseNorm).sum(1);
    const at::Tensor better = err < best;
    best = at::where(better, err, best);
    params.scale = at::where(better, scale1, params.scale);
    params.zero = at::where(better, zero1, params.zero);
  }
  return params;
}

}  // namespace gptq::solver
