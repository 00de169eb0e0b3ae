#include "gptq/convert/v1_zeros.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"

namespace gptq::convert {

namespace {

// [n_groups, out] -> [out, in]: each weight's group value.
at::Tensor per_weight(const at::Tensor& per_group, const at::Tensor& g_idx) {
  return per_group.index_select(0, g_idx.to(at::kLong)).t();
}

at::Tensor dequantize(const pack::UnpackedGptq& linear) {
  return (linear.codes.to(at::kFloat) - per_weight(linear.zeros, linear.g_idx).to(at::kFloat)) *
         per_weight(linear.scales, linear.g_idx);
}

// The largest code of each (group, output row).
at::Tensor max_code_per_group(const pack::UnpackedGptq& linear) {
  const at::Tensor codes = linear.codes.t().to(at::kLong);  // [in, out]
  const at::Tensor index = linear.g_idx.to(at::kLong).unsqueeze(1).expand_as(codes);
  return at::zeros(linear.zeros.sizes(), at::kLong).scatter_reduce(0, index, codes, "amax", /*include_self=*/true);
}

}  // namespace

int64_t count_zero_zeros(const pack::UnpackedGptq& linear) { return linear.zeros.eq(0).sum().item<int64_t>(); }

V1Reencoding reencode_for_v1(const pack::UnpackedGptq& linear, int bits) {
  GPTQ_CHECK(bits >= 2 && bits <= 8, "bits must be 2..8, got ", bits);
  const int maxq = (1 << bits) - 1;
  V1Reencoding result;
  result.linear = linear;
  const at::Tensor zero_groups = linear.zeros.eq(0);
  result.n_groups_changed = zero_groups.sum().item<int64_t>();
  if (result.n_groups_changed == 0) return result;

  // A group whose codes never reach maxq fits codes + 1 on the same scale.
  const at::Tensor requantize = zero_groups.logical_and(max_code_per_group(linear).eq(maxq));
  result.n_groups_requantized = requantize.sum().item<int64_t>();
  const at::Tensor widened = (linear.scales * (static_cast<float>(maxq) / (maxq - 1))).to(at::kHalf).to(at::kFloat);
  const at::Tensor new_scales = at::where(requantize, widened, linear.scales);

  const at::Tensor codes = linear.codes.to(at::kFloat);
  const at::Tensor shifted = codes + 1;
  const at::Tensor scale_w = per_weight(new_scales, linear.g_idx);
  const at::Tensor weight = dequantize(linear);
  // A zero scale holds only zeros: code 1 on zero 1 keeps them.
  const at::Tensor refit =
      at::where(scale_w.eq(0), at::ones_like(codes), (at::round(weight / scale_w) + 1).clamp(0, maxq));
  at::Tensor new_codes = at::where(per_weight(requantize, linear.g_idx), refit,
                                   at::where(per_weight(zero_groups, linear.g_idx), shifted, codes));
  result.linear.codes = new_codes.to(at::kByte);
  result.linear.zeros = at::where(zero_groups, at::ones_like(linear.zeros), linear.zeros);
  result.linear.scales = new_scales;
  result.max_abs_change = (dequantize(result.linear) - weight).abs().max().item<double>();
  return result;
}

}  // namespace gptq::convert
