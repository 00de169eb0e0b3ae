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
  GPTQ_CHECK(config.min_zero == 0 || config.min_zero == 1, "min_zero must be 0 or 1, got ",
             config.min_zero);
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

  // The asymmetric zero point. Where it rounds below min_zero it is raised,
  // and the step widened to max / (maxq - min_zero) so the top of the range
  // stays on the grid (a raised zero means min(x, 0) > -scale/2, so the
  // bottom still fits): the cost is a step maxq / (maxq - 1) times coarser on
  // those groups only.
  const bool can_raise = !config.sym && config.min_zero > 0;
  auto fit_asym = [&](const at::Tensor& low, const at::Tensor& high, at::Tensor& scale,
                      at::Tensor& zero, at::Tensor& raised) {
    scale = (high - low) / maxq;
    zero = at::round(-low / scale);
    if (!can_raise) return;
    raised = zero < config.min_zero;
    scale = at::where(raised, high / (maxq - config.min_zero), scale);
    zero = at::clamp_min(zero, config.min_zero);
  };
  QuantParams params;
  if (config.sym) {
    params.scale = (xmax - xmin) / maxq;
    params.zero = at::full_like(params.scale, (maxq + 1) / 2);
  } else {
    fit_asym(xmin, xmax, params.scale, params.zero, params.raised);
  }
  if (!config.mse) return params;

  at::Tensor best = at::full_like(params.scale, std::numeric_limits<float>::infinity());
  for (int step = 0; step < static_cast<int>(kMseMaxShrink * kMseGrid); ++step) {
    const double shrink = 1.0 - static_cast<double>(step) / kMseGrid;
    const at::Tensor xmin1 = xmin * shrink;
    const at::Tensor xmax1 = xmax * shrink;
    at::Tensor scale1, zero1, raised1;
    if (config.sym) {
      scale1 = (xmax1 - xmin1) / maxq;
      zero1 = params.zero;
    } else {
      fit_asym(xmin1, xmax1, scale1, zero1, raised1);
    }
    const at::Tensor s = scale1.unsqueeze(1);
    const at::Tensor z = zero1.unsqueeze(1);
    const at::Tensor deq = dequantize_codes(quantize_codes(x, s, z, maxq), s, z);
    const at::Tensor err = (deq - x).abs_().pow_(kMseNorm).sum(1);
    const at::Tensor better = err < best;
    best = at::where(better, err, best);
    params.scale = at::where(better, scale1, params.scale);
    params.zero = at::where(better, zero1, params.zero);
    if (can_raise) params.raised = at::where(better, raised1, params.raised);
  }
  return params;
}

}  // namespace gptq::solver
