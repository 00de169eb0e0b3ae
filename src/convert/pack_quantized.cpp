#include "gptq/convert/pack_quantized.h"

#include <ATen/ATen.h>

#include "gptq/core/error.h"

namespace gptq::convert {

namespace {

int64_t n_groups_of(int64_t in_features, int group_size) {
  return group_size == -1 ? 1 : in_features / group_size;
}

}  // namespace

std::optional<std::string> pack_quantized_refusal(const pack::UnpackedGptq& linear,
                                                  const solver::QuantConfig& quant) {
  const int bits = quant.bits;
  if (bits != 2 && bits != 4 && bits != 8) {
    return std::to_string(bits) + "-bit codes (compressed-tensors packs 3 bits differently across versions "
           "and vLLM runs 4 and 8 bits; 2, 4 and 8 are written)";
  }
  const int64_t in_features = linear.codes.size(1);
  if (quant.group_size != -1 && in_features % quant.group_size != 0) {
    return "in_features " + std::to_string(in_features) + " is not a multiple of group_size " +
           std::to_string(quant.group_size) + " (compressed-tensors groups must tile the row)";
  }
  if (linear.zeros.size(0) != n_groups_of(in_features, quant.group_size)) {
    return "it stores " + std::to_string(linear.zeros.size(0)) + " groups, not in_features / group_size";
  }
  if (!linear.g_idx.to(at::kLong).equal(pack::sequential_g_idx(in_features, quant.group_size).to(at::kLong))) {
    return "its g_idx is not column order (act-order without static groups); compressed-tensors removed "
           "group activation ordering (weight_g_idx), so these groups have no pack-quantized encoding";
  }
  if (quant.sym) {
    const int64_t off = linear.zeros.ne(1 << (bits - 1)).sum().item<int64_t>();
    if (off > 0) {
      return "its scheme is symmetric but " + std::to_string(off) + " zero point(s) are not " +
             std::to_string(1 << (bits - 1)) + " (symmetric pack-quantized stores no zero point)";
    }
  }
  return std::nullopt;
}

PackQuantized to_pack_quantized(const pack::UnpackedGptq& linear, const solver::QuantConfig& quant) {
  if (auto why = pack_quantized_refusal(linear, quant)) throw UnsupportedError(*why);
  PackQuantized packed;
  // The package packs q - 2^(b-1) offset back by 2^(b-1): the unsigned code's bits.
  packed.weight_packed = pack::pack_rows(linear.codes, quant.bits);
  packed.weight_scale = linear.scales.t().to(at::kHalf).contiguous();
  if (!quant.sym) packed.weight_zero_point = pack::pack_rows(linear.zeros, quant.bits).t().contiguous();
  packed.weight_shape = at::tensor({linear.codes.size(0), linear.codes.size(1)}, at::kLong);
  return packed;
}

pack::UnpackedGptq from_pack_quantized(const PackQuantized& packed, const solver::QuantConfig& quant) {
  GPTQ_CHECK(packed.weight_shape.defined() && packed.weight_shape.numel() == 2, "weight_shape must hold 2 values");
  const int64_t out_features = packed.weight_shape[0].item<int64_t>();
  const int64_t in_features = packed.weight_shape[1].item<int64_t>();
  GPTQ_CHECK(packed.weight_packed.dim() == 2 && packed.weight_packed.size(0) == out_features &&
                 packed.weight_packed.size(1) * 32 == in_features * quant.bits,
             "weight_packed has shape ", packed.weight_packed.sizes(), ", expected [", out_features, ", ",
             in_features * quant.bits / 32, "]");
  pack::UnpackedGptq linear;
  linear.codes = pack::unpack_rows(packed.weight_packed, quant.bits);
  linear.scales = packed.weight_scale.t().to(at::kFloat).contiguous();
  const int64_t n_groups = linear.scales.size(0);
  linear.zeros = quant.sym ? at::full({n_groups, out_features}, 1 << (quant.bits - 1), at::kInt)
                           : pack::unpack_rows(packed.weight_zero_point.t().contiguous(), quant.bits).to(at::kInt);
  linear.g_idx = pack::sequential_g_idx(in_features, quant.group_size).to(at::kInt);
  return linear;
}

nlohmann::json pack_quantized_weights_args(const solver::QuantConfig& quant) {
  const bool per_row = quant.group_size == -1;
  return {{"num_bits", quant.bits},
          {"type", "int"},
          {"symmetric", quant.sym},
          {"strategy", per_row ? "channel" : "group"},
          {"group_size", per_row ? nlohmann::json(nullptr) : nlohmann::json(quant.group_size)},
          {"dynamic", false},
          {"actorder", nullptr},
          {"observer", "minmax"}};
}

}  // namespace gptq::convert
