// RMSNorm and Gemma's (1 + w) RMSNorm, op for op as transformers.
#include "gptq/model/norm.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"

namespace gptq::model {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  x32 = x32 * at::rsqrt(variance + eps);
  return weight * x32.to(x.scalar_type());
}

at::Tensor rms_norm_plus_one(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  x32 = x32 * at::rsqrt(variance + eps);
  return (x32 * (1.0 + weight.to(at::kFloat))).to(x.scalar_type());
}

at::Tensor apply_norm(NormKind kind, const at::Tensor& x, const at::Tensor& weight, double eps) {
  switch (kind) {
    case NormKind::kRmsNorm: return rms_norm(x, weight, eps);
    case NormKind::kRmsNormPlusOne: return rms_norm_plus_one(x, weight, eps);
  }
  GPTQ_ASSERT(false, "unknown norm kind");
  return {};
}

}  // namespace gptq::model
