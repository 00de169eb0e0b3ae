#pragma once
// The ggml block codec: rows of (codes, scale, zero) from the solver on
// make_ggml_grid(type) <-> the bytes ggml keeps for a tensor row, and ggml's
// dequantization of those bytes, bit for bit (ggml-quants.c dequantize_row_*,
// gguf-py quants.py).
//
// Block layouts (ggml-common.h; little-endian, fp16 = IEEE half, a row is its
// blocks back to back, a value's index inside its block is `i`):
//
//   Q4_0, 32 values, 18 bytes:  d fp16 | qs[16]
//        q(i) = qs[i % 16] >> (4 * (i / 16)) & 0xF      value d * (q - 8)
//   Q4_1, 32 values, 20 bytes:  d fp16 | m fp16 | qs[16] (as Q4_0)
//                                                       value d * q + m
//   Q8_0, 32 values, 34 bytes:  d fp16 | qs[32] int8    value d * qs[i]
//   Q4_K, 256 values, 144 bytes: d fp16 | dmin fp16 | scales[12] | qs[128]
//        8 groups of 32; group g has 6-bit sc(g), m(g):
//          g < 4:  sc = scales[g] & 63,  m = scales[g + 4] & 63
//          g >= 4: sc = scales[g + 4] & 0xF | (scales[g - 4] >> 6) << 4
//                  m  = scales[g + 4] >> 4  | (scales[g] >> 6) << 4
//        i = 64 c + 32 h + l (c < 4, h < 2, l < 32), group 2c + h:
//          q(i) = qs[32 c + l] >> (4 h) & 0xF
//                                       value (d * sc) * q - (dmin * m)
//   Q5_K, 256 values, 176 bytes: d fp16 | dmin fp16 | scales[12] | qh[32] | qs[128]
//        as Q4_K for the low 4 bits; bit 4 of q(i) is qh[l] >> (2c + h) & 1
//   Q6_K, 256 values, 210 bytes: ql[128] | qh[64] | scales[16] int8 | d fp16
//        16 groups of 16: group(i) = i / 16; i = 128 n + 32 k + l
//        (n < 2, k < 4, l < 32): q(i) = (ql[64 n + 32 (k % 2) + l] >> (4 (k / 2)) & 0xF)
//                                     | (qh[32 n + l] >> (2 k) & 3) << 4
//                                       value (d * scales[group]) * (q - 32)
//   F32 / F16 / BF16: the values themselves, 4 / 2 / 2 bytes.
//
// encode_rows reads the grid's floats back into those fields: legacy d and m
// must be fp16 values and the zero ggml's fixed 8/128; a K-quant
// super-block's scales are split into (fp16 d, integer sc), which is possible
// exactly because the grid made them as such products (kquant_fit.h: for
// Q4_K/Q5_K the split with the largest top sub-scale, ggml's own on its _ref
// path where that sub-scale is 63; for Q6_K ggml's, whose largest sub-scale
// is -128). Any other input is an internal error (GPTQ_ASSERT).
//
// Throws: InputError for wrong shapes, dtypes or a row that is not whole
// blocks; Error (internal) for scales the grid cannot have made.
#include <ATen/core/Tensor.h>

#include "gptq/gguf/ggml_type.h"

namespace gptq::gguf {

// codes uint8 [rows, cols] in [0, grid max]; scales, zeros float32
// [cols / ggml_group_size(type), rows] as the grid's fit/fit_all made them.
// Returns uint8 [rows, row_bytes(type, cols)] on the CPU.
at::Tensor encode_rows(GgmlType type, const at::Tensor& codes, const at::Tensor& scales,
                       const at::Tensor& zeros);

// bytes uint8 [rows, row_bytes(type, n_cols)] -> float32 [rows, n_cols] on the
// CPU, as ggml dequantizes (any type above, float types included).
at::Tensor decode_rows(GgmlType type, const at::Tensor& bytes, int64_t n_cols);

// The bytes of W (any float dtype, [rows, cols]) for tensors nobody solves:
// F32/F16/BF16 a plain cast (round to nearest even); Q4_0, Q4_1, Q8_0 exactly
// ggml's quantize_row_*_ref (codes from the unrounded d, as llama.cpp);
// K-quants fit_all (with `importance` float32 [cols] when defined, as
// llama-quantize's imatrix path) then round to nearest on the grid, as
// ggml's quantize_row_*_K. importance is ignored by the legacy types.
at::Tensor quantize_rows(GgmlType type, const at::Tensor& W, const at::Tensor& importance);

}  // namespace gptq::gguf
