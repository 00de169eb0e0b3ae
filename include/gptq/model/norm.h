#pragma once
// The decoder's RMSNorms (NormKind in arch.h), as transformers computes them:
// the mean of squares and the rsqrt in fp32 whatever the input dtype.
//
// Shapes: x [..., n] in any float dtype; weight [n] in x's dtype. The result
// has x's shape and dtype.
#include <ATen/core/Tensor.h>

#include "gptq/model/arch.h"

namespace gptq::model {

// LlamaRMSNorm: weight * (x.float() * rsqrt(mean(x.float()^2, -1) + eps)).to(x.dtype)
// (the weight multiply runs in x's dtype, after the cast).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// GemmaRMSNorm: ((x.float() * rsqrt(mean(x.float()^2, -1) + eps)) * (1 + weight.float())).to(x.dtype)
// (everything in fp32, one cast at the end).
at::Tensor rms_norm_plus_one(const at::Tensor& x, const at::Tensor& weight, double eps);
// The norm `kind` names.
at::Tensor apply_norm(NormKind kind, const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace gptq::model
