#pragma once
// make_ggml_grid: the solver::QuantGrid of a ggml quantized type, so that GPTQ
// (and RTN) quantize onto exactly the values llama.cpp can store. What a
// group's (scale, zero) mean, float32 each (layouts: gguf/ggml_codec.h):
//
//   type   group  codes    scale            zero            value of code q
//   Q4_0   32     0..15    d (fp16)         8               scale * (q - 8)
//   Q8_0   32     1..255   d (fp16)         128             scale * (q - 128)
//   Q4_1   32     0..15    d (fp16)         m (fp16)        scale * q + zero
//   Q4_K   32     0..15    d * sc           dmin * m        scale * q - zero
//   Q5_K   32     0..31    d * sc           dmin * m        scale * q - zero
//   Q6_K   16     0..63    d * sc           32              scale * (q - 32)
//
// (K-quants: d, dmin fp16 per 256-value super-block, sc and m 6-bit for
// Q4_K/Q5_K, sc int8 for Q6_K.) Every product is exact in float32, so
// dequantize() is bit for bit ggml's dequantize_row_* (and gguf-py's).
//
// fit() (legacy types, one group of a row) follows ggml's *_ref quantizers:
// Q4_0 d = max / -8 with max the value of largest magnitude (d may be
// negative), Q8_0 d = max|x| / 127, Q4_1 d = (max - min) / 15, m = min, each
// rounded to fp16. The K-quants fit jointly (fits_jointly(): their groups
// share d): fit_all() runs ggml's quantize_row_*_K_ref search, or the
// importance-weighted quantize_row_*_K_impl one when importance (diag(H), as
// llama.cpp's imatrix) is given; fit() on a K-quant grid is an internal error.
// quantize() rounds to the nearest code of the fixed grid (half to even, as
// ggml's nearest_int) and clamps; a group with scale 0 gets the zero code
// (Q4_K/Q5_K: 0) and decodes to -zero (0 for the symmetric types).
// affine() is nullopt: the solver runs these grids in its tensor-ops loop.
//
// Throws: make_ggml_grid InputError for a float type; fit_all InputError when
// the group size is not ggml_group_size(type) or a row is not whole 256-value
// super-blocks.
#include <memory>

#include "gptq/gguf/ggml_type.h"
#include "gptq/solver/grid.h"

namespace gptq::gguf {

std::shared_ptr<const solver::QuantGrid> make_ggml_grid(GgmlType type);

// `values` rounded through fp16 and back: ggml stores block scales and mins as fp16.
at::Tensor to_half_grid(const at::Tensor& values);

}  // namespace gptq::gguf
