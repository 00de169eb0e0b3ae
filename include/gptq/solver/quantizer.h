#pragma once
// The min-max quantization grid of GPTQ (IST-DASLab/gptq `quant.py`).
//
// A row (or a group of columns of a row) x gets a scale s > 0 and an integer
// zero point z in [0, maxq], maxq = 2^bits - 1; a value is stored as the code
//   q = clamp(round(x / s) + z, 0, maxq)        (round half to even)
// and read back as s * (q - z).
//   asym: s = (max(x, 0) - min(x, 0)) / maxq, z = round(-min(x, 0) / s)
//   sym:  the range is widened to [-max|x|, max|x|] when x has a negative
//         entry, and z = (maxq + 1) / 2 (the reference's convention)
// An all-zero range becomes [-1, 1]. An asymmetric zero point below
// min_zero is raised to it (GPTQ v1 stores zero - 1, so its readers need
// zero >= 1): the group's top is then clipped by up to one step. With `mse`, the clip range is shrunk
// p = 1, 0.99, ... 0.21 (grid 100, maxshrink 0.8) and the p with the least
// sum |x - deq|^2.4 per row wins, as the reference's `mse=True`.
#include <ATen/core/Tensor.h>

namespace gptq::solver {

struct QuantConfig {            // per-row / per-group asymmetric or symmetric min-max grid
  int bits = 4;                 // 2, 3, 4, 8 (anything else: InputError)
  int group_size = 128;         // -1 = one group per row; else > 0 (ragged last group allowed)
  bool sym = true;              // sym: zero = (maxq + 1) / 2
  bool mse = false;             // reference mse=True grid search of the clip range
  int min_zero = 0;             // asym: smallest zero point (0 or 1); sym ignores it
  bool operator==(const QuantConfig& other) const = default;
};

// Throws InputError unless bits is 2, 3, 4 or 8, group_size is -1 or > 0 and
// min_zero is 0 or 1.
void validate(const QuantConfig& config);

// 2^bits - 1.
int max_code(const QuantConfig& config);

// Per-row grid of one group: both float32 [rows] on x's device. zero holds
// integral values in [0, maxq].
struct QuantParams {
  at::Tensor scale;
  at::Tensor zero;
  at::Tensor raised;  // bool [rows]: the zero was raised to min_zero (undefined when it cannot be)
};

// x: float32 [rows, k] (k >= 1) -> the grid of each row (reference find_params).
QuantParams find_params(const at::Tensor& x, const QuantConfig& config);

// The pure quantizer: codes clamp(round(x / scale) + zero, 0, maxq) as float32.
// scale and zero broadcast against x.
at::Tensor quantize_codes(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero,
                          int maxq);

// scale * (codes - zero).
at::Tensor dequantize_codes(const at::Tensor& codes, const at::Tensor& scale,
                            const at::Tensor& zero);

}  // namespace gptq::solver
