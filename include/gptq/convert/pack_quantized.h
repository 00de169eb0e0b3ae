#pragma once
// compressed-tensors "pack-quantized" (the format llm-compressor writes and
// vLLM's compressed-tensors WNA16 path loads), per quantized linear `<p>` with
// out_features O, in_features I, G groups, b bits:
//   <p>.weight_packed      int32   [O, I*b/32]  codes packed along the input dim:
//                          the row's codes as one little-endian bit stream,
//                          code k at bits [k*b, (k+1)*b) (for b = 4: 8 nibbles
//                          per word, input 8w+j at bits 4j of word w); the
//                          package stores the signed code q - 2^(b-1) and packs
//                          it offset back, so the stored bits are the unsigned
//                          GPTQ code.
//   <p>.weight_scale       float16 [O, G]  (GPTQ's scales, transposed, as stored)
//   <p>.weight_zero_point  int32   [O*b/32, G]  asymmetric only: the zeros packed
//                          along the output dim (the same bits as GPTQ v2's
//                          qzeros, transposed); symmetric schemes store none and
//                          mean zero 2^(b-1).
//   <p>.weight_shape       int64   [2] = {O, I}
//   dequantized W[o, i] = (code - zero) * scale[o, i / group_size] (group
//   strategy; group_size -1 is the "channel" strategy, one scale per row).
// config.json "quantization_config": {"quant_method": "compressed-tensors",
// "format": "pack-quantized", "quantization_status": "compressed",
// "config_groups": {"group_0": {"targets": ["Linear"], "weights": {...},
// "format": "pack-quantized"}, "group_1": {"targets": ["re:^(?:a|b)$"], ...}},
// "ignore": [modules left in full precision]}: the checkpoint's default scheme
// targets every Linear; each other scheme of a mixed ("dynamic") checkpoint is
// its own group naming its modules exactly (the package prefers an exact or
// regex match over a class match).
//
// Not representable (UnsupportedError naming why): b = 3 (the package packs it
// differently across versions and vLLM does not run it), act-order g_idx (not
// i / group_size: compressed-tensors removed group activation ordering),
// I not a multiple of group_size, a symmetric scheme whose zeros are not
// 2^(b-1). Throws InputError on inconsistent shapes.
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "gptq/pack/gptq_pack.h"
#include "gptq/solver/scheme.h"

namespace gptq::convert {

struct PackQuantized {
  at::Tensor weight_packed;      // int32 [O, I*b/32]
  at::Tensor weight_scale;       // float16 [O, G]
  at::Tensor weight_zero_point;  // int32 [O*b/32, G]; undefined when symmetric
  at::Tensor weight_shape;       // int64 [2]
};

// Why `linear` cannot be stored under `quant` (bits, group_size, sym); nullopt
// when it can.
std::optional<std::string> pack_quantized_refusal(const pack::UnpackedGptq& linear,
                                                  const solver::QuantConfig& quant);

// UnsupportedError with pack_quantized_refusal's reason when it has one.
PackQuantized to_pack_quantized(const pack::UnpackedGptq& linear, const solver::QuantConfig& quant);
// The inverse (codes, zeros, scales, sequential g_idx), for checks.
pack::UnpackedGptq from_pack_quantized(const PackQuantized& packed, const solver::QuantConfig& quant);

// The "weights" QuantizationArgs of one config group.
nlohmann::json pack_quantized_weights_args(const solver::QuantConfig& quant);

}  // namespace gptq::convert
