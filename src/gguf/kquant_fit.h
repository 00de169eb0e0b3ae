#pragma once
// Private to gguf: ggml's K-quant grid search (ggml-quants.c,
// quantize_row_q{4,5,6}_K_ref / _impl) for whole rows, and the split of a
// super-block's sub-block scales back into ggml's (fp16 d, integer sc).
//
// A K-quant row is cut into super-blocks of 256 values; Q4_K/Q5_K split a
// super-block into 8 groups of 32 with value (d*sc)*q - (dmin*m), sc and m
// 6-bit; Q6_K into 16 groups of 16 with value (d*sc)*(q-32), sc int8. d and
// dmin are fp16, so every product d*sc (at most 11 + 8 significant bits) is
// exact in float32: the float products alone determine the values, and the
// codec recovers (d, sc) from them (split_*).
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "gptq/solver/quantizer.h"

namespace gptq::gguf::detail {

constexpr int64_t kSuperBlock = 256;

// Q4_K (max_code 15) or Q5_K (31): W float32 [rows, cols] on the CPU,
// contiguous, cols a multiple of 256; importance float32 [cols] or undefined.
// Returns scale = d*sc and zero = dmin*m, float32 [cols/32, rows] on the CPU.
// Without importance: ggml's _ref path (make_qkx2_quants, d = max scale/63);
// with it: the _impl path (make_qkx3_quants weighted by
// importance * sqrt(sigma2 + x^2), d and dmin by make_qp_quants).
solver::QuantParams fit_k_min_grid(const at::Tensor& W, const at::Tensor& importance, int max_code);

// Q6_K: scale = d*sc float32 [cols/16, rows] (zero: 32), make_qx_quants per
// group weighted by x^2 (_ref) or by importance (_impl).
solver::QuantParams fit_q6_k_grid(const at::Tensor& W, const at::Tensor& importance);

// The (d, sc[0..n)) with d fp16 and sc in [0, 63] whose products are exactly
// products[0..n), choosing the largest top sub-scale (63 whenever ggml's _ref
// path made them, so then ggml's own split). False when no split exists.
bool split_unsigned_scales(const float* products, int n, float& d, uint8_t* sc);

// The (d, sc[0..16)) with d fp16 and sc int8 of a Q6_K super-block: ggml
// makes the largest |sub-scale| exactly -128 (sc = round(-128 * s / s_max)),
// so d = -p/128 for the product p of largest magnitude. All-zero products
// give d = 0. False when the products do not have that form.
bool split_q6_k_scales(const float* products, float& d, int8_t* sc);

// fp32 -> fp16 -> fp32, round to nearest even (GGML_FP32_TO_FP16).
float round_to_half(float value);
bool is_half_exact(float value);

}  // namespace gptq::gguf::detail
