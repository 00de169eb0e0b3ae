#pragma once
// QuantGrid: how one group of weights maps to integer codes and back, the
// seam between the GPTQ solver and the value grid it quantizes onto.
//
// The solver fits a grid per group (fit), then quantizes column by column
// (quantize/dequantize) and pushes each column's error into the rest. Two
// loops run it: the fused CPU/CUDA block kernels (solver/block_kernel.h),
// which run affine integer grids only (affine() says so and gives the code
// range), and a per-column tensor-ops loop that calls quantize()/dequantize()
// and so runs any grid. A grid that is not affine (a lookup table such as
// NF4) returns nullopt from affine() and the solver takes the tensor-ops loop.
//
// Shapes: x float32 [rows, k]; scale and zero [rows] float32 on x's device,
// broadcast against columns as [rows, 1] or [rows].
//
// scale and zero are the grid's own two numbers per group and row: for the
// affine integer grids the step and the integer zero point; a grid that is
// not affine may give them any meaning its quantize/dequantize agree on
// (ggml's Q4_1 and K-quants keep an additive offset in `zero`). The solver
// hands both back unrounded (QuantizedWeight::grid_zeros).
//
// Grids whose groups share parameters (ggml's K-quants: one fp16 scale per
// 256-column super-block over 8 or 16 groups) fit every group at once from
// the untouched weight (fit_all) and run with static groups only.
#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>

#include "gptq/solver/quantizer.h"

namespace gptq::solver {

// q = clamp(round(x / scale) + zero, 0, max_code); x' = scale * (q - zero).
struct AffineCodes {
  int max_code = 15;
};

class QuantGrid {
 public:
  virtual ~QuantGrid() = default;
  virtual int bits() const = 0;
  // The grid of each row of one group (x [rows, k], k >= 1).
  virtual QuantParams fit(const at::Tensor& x) const = 0;
  // Codes (as float32, integral) of x under (scale, zero).
  virtual at::Tensor quantize(const at::Tensor& x, const at::Tensor& scale,
                              const at::Tensor& zero) const = 0;
  // The values codes stand for.
  virtual at::Tensor dequantize(const at::Tensor& codes, const at::Tensor& scale,
                                const at::Tensor& zero) const = 0;
  // Set when the fused block kernels can run this grid.
  virtual std::optional<AffineCodes> affine() const = 0;
  // Optional: every group's grid at once, scale and zero [n_groups, rows],
  // from W float32 [rows, cols] in original column order before any GPTQ
  // update, with groups of `group_size` consecutive columns. `importance`
  // float32 [cols] weighs the columns (diag(H), as llama.cpp's imatrix);
  // undefined when there is no Hessian (RTN). Default: nullopt, the solver
  // then calls fit() group by group.
  virtual std::optional<QuantParams> fit_all(const at::Tensor& W, const at::Tensor& importance,
                                             int64_t group_size) const {
    return std::nullopt;
  }
  // True when fit_all must be used (the solver then fixes every grid before
  // the sweep, as with static groups, whatever the scheme says).
  virtual bool fits_jointly() const { return false; }
};

// GPTQ's min-max integer grid (quantizer.h): today's only grid.
class MinMaxIntegerGrid : public QuantGrid {
 public:
  explicit MinMaxIntegerGrid(QuantConfig config);  // validates it
  int bits() const override { return config_.bits; }
  QuantParams fit(const at::Tensor& x) const override { return find_params(x, config_); }
  at::Tensor quantize(const at::Tensor& x, const at::Tensor& scale,
                      const at::Tensor& zero) const override {
    return quantize_codes(x, scale, zero, max_code(config_));
  }
  at::Tensor dequantize(const at::Tensor& codes, const at::Tensor& scale,
                        const at::Tensor& zero) const override {
    return dequantize_codes(codes, scale, zero);
  }
  std::optional<AffineCodes> affine() const override { return AffineCodes{max_code(config_)}; }
  const QuantConfig& config() const { return config_; }

 private:
  QuantConfig config_;
};

}  // namespace gptq::solver
