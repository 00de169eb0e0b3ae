#pragma once
// GPTQ (Frantar et al. 2022, Algorithm 1; IST-DASLab/gptq `fasterquant`) and
// round-to-nearest, with the reference's semantics.
//
// Symbols as in the paper:
//   W     [rows = out_features, cols = in_features] the weight, quantized
//         column by column (in act-order: by descending diag(H))
//   H     [cols, cols] 2/n X^T X, damped by damp * mean(diag(H)) on the diagonal
//   Hinv  the upper Cholesky factor U of H^-1 (U^T U = H^-1); the paper's
//         [H_F^-1]_qq is U[q, q]^2 and its update row is U[q, q:] / U[q, q]
//   Q     the dequantized columns, Err the scaled errors (w - q) / U[q, q]
// Columns are taken in blocks of block_size: inside a block each quantized
// column's error is pushed into the block's later columns. Between blocks the
// reference pushes each block's errors into all later columns
// (W[:, i2:] -= Err @ Hinv[i1:i2, i2:]); we do the same arithmetic
// left-looking, pulling all earlier errors into a block just before it runs
// (W[:, s:e] += (W0 - Q)[:, :s] R[:s, s:e] U[s:e, s:e], with H = R R^T and
// U = R^-1, see factorization.h), so Hinv is never formed: one Cholesky, no
// O(n^3) inverse, and GEMMs with the long inner dimension.
//
// Reference details kept: group parameters come from W as it stands at the
// start of the block holding the group's first column; with group_size -1 they
// come from the undamped input W before dead columns are zeroed; dead columns
// (H[i,i] == 0) get H[i,i] = 1 and W[:, i] = 0; static_groups fixes every
// group's grid from W (original column order) before any update.
//
// Throws InputError for bad shapes/config or a non-finite W, NumericalError
// for a non-finite or non-symmetric H (it comes from the calibration forward,
// not from the user), when Cholesky still fails after max_damp_retries
// increments of damp_percent, or when an output would be non-finite.
#include <ATen/core/Tensor.h>

#include <memory>

#include "gptq/solver/grid.h"
#include "gptq/solver/quantizer.h"

namespace gptq::solver {

struct GptqConfig {
  QuantConfig quant;
  int block_size = 128;
  double damp_percent = 0.01;
  double damp_increment = 0.01; // added to damp_percent on each Cholesky retry
  int max_damp_retries = 10;
  bool desc_act = false;
  bool static_groups = false;
  // The grid every group is fitted on; null: MinMaxIntegerGrid(quant).
  // quant.group_size still sets the groups; quant's bits/sym/mse/min_zero
  // are validated only for the min-max grid (a given grid owns its codes).
  std::shared_ptr<const QuantGrid> grid;
};

// config.grid, or the min-max grid of config.quant.
std::shared_ptr<const QuantGrid> grid_of(const GptqConfig& config);

struct QuantizedWeight {
  at::Tensor codes;        // uint8 [rows=out_features, cols=in_features], original column order
  at::Tensor scales;       // float32 [n_groups, rows]
  at::Tensor zeros;        // int32  [n_groups, rows], the true zero point in [0, maxq]
  at::Tensor grid_zeros;   // float32 [n_groups, rows]: zero as the grid fitted it (grid.h; an offset for some grids)
  at::Tensor g_idx;        // int32  [cols], group of each (original-order) column
  at::Tensor dequantized;  // float32 [rows, cols] = (codes - zeros[g_idx]) * scales[g_idx]
  double loss = 0;         // reference loss: sum over the layer of (w - q)^2 / Hinv[c,c]^2 / 2  (RTN: sum (w-q)^2 weighted by diag(H)/2 if H given, else plain squared error)
  double damp_used = 0;    // damp_percent actually used (after retries)
  at::Tensor row_loss;     // float32 [rows]: each row's share of 2 * loss (rows of a stacked solve split it)
  at::Tensor zero_raised;  // int64 [rows]: groups of each row whose zero was raised to quant.min_zero
};

// W [rows, cols] any float dtype, any device; H [cols, cols] float32 on the same device.
QuantizedWeight gptq_quantize(const at::Tensor& W, const at::Tensor& H, const GptqConfig& config);

// Round-to-nearest on the same grid (groups in natural column order).
QuantizedWeight rtn_quantize(const at::Tensor& W, const QuantConfig& config);
// As above; loss = sum over columns of diag(H)[c] / 2 * sum_rows (w - q)^2.
QuantizedWeight rtn_quantize(const at::Tensor& W, const QuantConfig& config, const at::Tensor& H);
// RTN on an explicit grid (config.grid as in GPTQ); H optional (undefined: plain squared error).
QuantizedWeight rtn_quantize(const at::Tensor& W, const GptqConfig& config, const at::Tensor& H);

}  // namespace gptq::solver
