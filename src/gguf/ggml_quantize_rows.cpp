// quantize_rows (gguf/ggml_codec.h): round to nearest for the tensors GPTQ
// does not solve, as llama-quantize would store them.
#include <ATen/ATen.h>

#include "gptq/core/error.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/gguf/ggml_grid.h"

namespace gptq::gguf {
namespace {

// C's roundf (half away from zero), exact in float as gguf-py's np_roundf.
at::Tensor round_half_away(const at::Tensor& v) {
  const at::Tensor magnitude = v.abs();
  const at::Tensor whole = magnitude.floor();
  return v.sign() * (whole + (2 * (magnitude - whole)).floor());
}

struct LegacyRows {
  at::Tensor codes;   // float [rows, blocks, 32], integral
  at::Tensor scales;  // float [rows, blocks], fp16 values
  at::Tensor zeros;   // float [rows, blocks]
};

// quantize_row_{q4_0,q4_1,q8_0}_ref: codes from the float32 d (and min), as
// ggml and gguf-py compute them, then d (and m) rounded to fp16.
LegacyRows quantize_legacy_ref(GgmlType type, const at::Tensor& x) {
  auto inverse = [](const at::Tensor& d) {
    return at::where(d == 0, at::zeros_like(d), d.reciprocal());
  };
  switch (type) {
    case GgmlType::kQ4_0: {
      const at::Tensor signed_max = x.gather(2, x.abs().argmax(2, /*keepdim=*/true));
      const at::Tensor d = signed_max / -8.0f;
      const at::Tensor codes = at::trunc(x * inverse(d) + 8.5f).clamp(0, 15);
      return {codes, to_half_grid(d.squeeze(2)), at::full_like(d.squeeze(2), 8.0f)};
    }
    case GgmlType::kQ4_1: {
      const at::Tensor lo = x.amin(2, /*keepdim=*/true), hi = x.amax(2, /*keepdim=*/true);
      const at::Tensor d = (hi - lo) / 15.0f;
      const at::Tensor codes = at::trunc((x - lo) * inverse(d) + 0.5f).clamp(0, 15);
      return {codes, to_half_grid(d.squeeze(2)), to_half_grid(lo.squeeze(2))};
    }
    case GgmlType::kQ8_0: {
      const at::Tensor d = x.abs().amax(2, /*keepdim=*/true) / 127.0f;
      const at::Tensor codes = round_half_away(x * inverse(d)) + 128.0f;
      return {codes, to_half_grid(d.squeeze(2)), at::full_like(d.squeeze(2), 128.0f)};
    }
    default: break;
  }
  GPTQ_ASSERT(false, "no reference quantizer for ", type_info(type).name);
  return {};
}

}  // namespace

at::Tensor quantize_rows(GgmlType type, const at::Tensor& W_in, const at::Tensor& importance) {
  GPTQ_CHECK(W_in.defined() && W_in.dim() == 2 && at::isFloatingType(W_in.scalar_type()),
             "quantize_rows needs a floating point [rows, cols] tensor");
  const GgmlTypeInfo& info = type_info(type);
  const int64_t n_rows = W_in.size(0), n_cols = W_in.size(1);
  row_bytes(type, n_cols);  // whole blocks, or InputError
  if (!info.quantized) {
    const c10::ScalarType dtype = type == GgmlType::kF32   ? at::kFloat
                                  : type == GgmlType::kF16 ? at::kHalf
                                                           : at::kBFloat16;
    return W_in.cpu().to(dtype).contiguous().view(at::kByte).reshape({n_rows, -1}).clone();
  }
  const at::Tensor W = W_in.to(at::kCPU, at::kFloat).contiguous();
  if (type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0) {
    const LegacyRows rows = quantize_legacy_ref(type, W.view({n_rows, n_cols / 32, 32}));
    return encode_rows(type, rows.codes.reshape({n_rows, n_cols}).to(at::kByte),
                       rows.scales.t().contiguous(), rows.zeros.t().contiguous());
  }
  const std::shared_ptr<const solver::QuantGrid> grid = make_ggml_grid(type);
  const int64_t group_size = ggml_group_size(type), n_groups = n_cols / group_size;
  const std::optional<solver::QuantParams> params = grid->fit_all(W, importance, group_size);
  GPTQ_ASSERT(params.has_value(), "K-quant grid without fit_all");
  // [groups, rows] -> [rows, groups, 1] against the values [rows, groups, group_size].
  const at::Tensor codes =
      grid->quantize(W.view({n_rows, n_groups, group_size}), params->scale.t().unsqueeze(2),
                     params->zero.t().unsqueeze(2));
  return encode_rows(type, codes.reshape({n_rows, n_cols}).to(at::kByte), params->scale,
                     params->zero);
}

}  // namespace gptq::gguf
