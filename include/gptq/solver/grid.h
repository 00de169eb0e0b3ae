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
