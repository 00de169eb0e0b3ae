#include "gptq/gguf/ggml_grid.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"
#include "kquant_fit.h"

namespace gptq::gguf {
namespace {

using solver::QuantParams;

// How codes become values (ggml_grid.h's table).
enum class ValueForm {
  kCentered,  // scale * (q - zero)
  kOffset,    // scale * q + zero          (Q4_1)
  kMinus,     // scale * q - zero          (Q4_K, Q5_K)
};

struct GridSpec {
  GgmlType type;
  int bits;
  int min_code;
  int max_code;
  ValueForm form;
};

GridSpec spec_of(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0: return {type, 4, 0, 15, ValueForm::kCentered};
    case GgmlType::kQ8_0: return {type, 8, 1, 255, ValueForm::kCentered};  // int8 -128 never used
    case GgmlType::kQ4_1: return {type, 4, 0, 15, ValueForm::kOffset};
    case GgmlType::kQ4_K: return {type, 4, 0, 15, ValueForm::kMinus};
    case GgmlType::kQ5_K: return {type, 5, 0, 31, ValueForm::kMinus};
    case GgmlType::kQ6_K: return {type, 6, 0, 63, ValueForm::kCentered};
    default: break;
  }
  GPTQ_CHECK(false, "ggml type ", type_info(type).name, " has no quantization grid");
  return {};
}

// scale/zero [rows] against x [rows, k] broadcast per row.
at::Tensor per_row(const at::Tensor& param, const at::Tensor& like) {
  return param.dim() == 1 && like.dim() == 2 ? param.unsqueeze(1) : param;
}

class GgmlGrid : public solver::QuantGrid {
 public:
  explicit GgmlGrid(GridSpec spec) : spec_(spec) {}

  int bits() const override { return spec_.bits; }

  QuantParams fit(const at::Tensor& x_in) const override {
    GPTQ_ASSERT(!fits_jointly(), type_info(spec_.type).name, " grids are fitted by fit_all");
    const at::Tensor x = x_in.to(at::kFloat);
    switch (spec_.type) {
      case GgmlType::kQ4_0: {
        const at::Tensor at_max = x.abs().argmax(1, /*keepdim=*/true);
        const at::Tensor signed_max = x.gather(1, at_max).squeeze(1);
        return {to_half_grid(signed_max / -8.0f), at::full_like(signed_max, 8.0f), at::Tensor()};
      }
      case GgmlType::kQ8_0: {
        const at::Tensor amax = x.abs().amax(1);
        return {to_half_grid(amax / 127.0f), at::full_like(amax, 128.0f), at::Tensor()};
      }
      case GgmlType::kQ4_1: {
        const at::Tensor lo = x.amin(1), hi = x.amax(1);
        return {to_half_grid((hi - lo) / 15.0f), to_half_grid(lo), at::Tensor()};
      }
      default: break;
    }
    GPTQ_ASSERT(false, "no per-group fit for ", type_info(spec_.type).name);
    return {};
  }

  at::Tensor quantize(const at::Tensor& x_in, const at::Tensor& scale_in,
                      const at::Tensor& zero_in) const override {
    const at::Tensor x = x_in.to(at::kFloat);
    const at::Tensor scale = per_row(scale_in, x), zero = per_row(zero_in, x);
    // A zero step would divide by zero: such a group takes the zero code.
    const at::Tensor dead = scale == 0;
    const at::Tensor step = at::where(dead, at::ones_like(scale), scale);
    at::Tensor codes;
    at::Tensor empty_code;
    switch (spec_.form) {
      case ValueForm::kCentered:
        codes = at::round(x / step) + zero;
        empty_code = zero;
        break;
      case ValueForm::kOffset:
        codes = at::round((x - zero) / step);
        empty_code = at::zeros_like(zero);
        break;
      case ValueForm::kMinus:
        codes = at::round((x + zero) / step);
        empty_code = at::zeros_like(zero);
        break;
    }
    // + 0.0f: a value rounding to -0 must be code +0, as ggml's integer codes
    // are, or its value could come out as -0 where ggml decodes +0.
    codes = codes.clamp(spec_.min_code, spec_.max_code) + 0.0f;
    return at::where(dead, empty_code, codes);
  }

  at::Tensor dequantize(const at::Tensor& codes, const at::Tensor& scale_in,
                        const at::Tensor& zero_in) const override {
    const at::Tensor scale = per_row(scale_in, codes), zero = per_row(zero_in, codes);
    const at::Tensor q = codes.to(at::kFloat);
    // One rounding at most, as ggml: the products are exact (fp16 x small int).
    switch (spec_.form) {
      case ValueForm::kCentered: return scale * (q - zero);
      case ValueForm::kOffset: return scale * q + zero;
      case ValueForm::kMinus: return scale * q - zero;
    }
    return {};
  }

  std::optional<solver::AffineCodes> affine() const override { return std::nullopt; }

  std::optional<QuantParams> fit_all(const at::Tensor& W, const at::Tensor& importance,
                                     int64_t group_size) const override {
    if (!fits_jointly()) return std::nullopt;
    const std::string_view name = type_info(spec_.type).name;
    GPTQ_CHECK(group_size == ggml_group_size(spec_.type), name, " needs groups of ",
               ggml_group_size(spec_.type), " columns, got ", group_size);
    GPTQ_CHECK(W.dim() == 2 && W.size(1) % detail::kSuperBlock == 0, name,
               " needs rows of whole 256-value super-blocks, got shape ", W.sizes());
    GPTQ_CHECK(!importance.defined() || (importance.dim() == 1 && importance.size(0) == W.size(1)),
               "importance must be [", W.size(1), "], got ", importance.sizes());
    QuantParams params = spec_.type == GgmlType::kQ6_K
                             ? detail::fit_q6_k_grid(W, importance)
                             : detail::fit_k_min_grid(W, importance, spec_.max_code);
    params.scale = params.scale.to(W.device());
    params.zero = params.zero.to(W.device());
    return params;
  }

  bool fits_jointly() const override {
    return spec_.type == GgmlType::kQ4_K || spec_.type == GgmlType::kQ5_K ||
           spec_.type == GgmlType::kQ6_K;
  }

 private:
  GridSpec spec_;
};

}  // namespace

std::shared_ptr<const solver::QuantGrid> make_ggml_grid(GgmlType type) {
  return std::make_shared<GgmlGrid>(spec_of(type));
}

at::Tensor to_half_grid(const at::Tensor& values) { return values.to(at::kHalf).to(at::kFloat); }

}  // namespace gptq::gguf
