#include "gptq/solver/gptq.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "block_kernel.h"
#include "column_order.h"
#include "gptq/core/error.h"
#include "gptq/solver/factorization.h"
#include "gptq_impl.h"

namespace gptq::solver {
namespace {

using detail::BlockLoop;
using detail::gather_solve_order;
using detail::permute_symmetric;
using detail::scatter_original_order;

// Relative asymmetry of H tolerated (rounding of a full X^T X GEMM is ~1e-7).
constexpr double kSymmetryTolerance = 1e-4;

struct HessianSummary {
  double asymmetry = 0;  // max |H - H^T|
  double max_abs = 0;    // max |H|
  bool finite = true;
};

// The summary in one tiled pass (CPU): each task reads a tile row and the
// mirrored tile column while both stay in cache.
HessianSummary summarize_hessian_cpu(const at::Tensor& H) {
  const at::Tensor Hc = H.contiguous();
  const float* data = Hc.data_ptr<float>();
  const int64_t n = Hc.size(0);
  constexpr int64_t kTile = 64;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  std::vector<HessianSummary> tiles(n_tiles);
  at::parallel_for(0, n_tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t tile_row = begin; tile_row < end; ++tile_row) {
      const int64_t row0 = tile_row * kTile, row1 = std::min(row0 + kTile, n);
      float worst = 0, largest = 0;
      bool finite = true;
      for (int64_t col0 = 0; col0 <= row0; col0 += kTile) {
        for (int64_t row = row0; row < row1; ++row) {
          const int64_t col1 = std::min({col0 + kTile, n, row + 1});
          for (int64_t col = col0; col < col1; ++col) {
            const float lower = data[row * n + col], upper = data[col * n + row];
            finite = finite && std::isfinite(lower) && std::isfinite(upper);
            worst = std::max(worst, std::abs(lower - upper));
            largest = std::max({largest, std::abs(lower), std::abs(upper)});
          }
        }
      }
      tiles[tile_row] = {worst, largest, finite};
    }
  });
  HessianSummary total;
  for (const HessianSummary& tile : tiles) {
    total.asymmetry = std::max(total.asymmetry, tile.asymmetry);
    total.max_abs = std::max(total.max_abs, tile.max_abs);
    total.finite = total.finite && tile.finite;
  }
  return total;
}

HessianSummary summarize_hessian(const at::Tensor& H) {
  if (H.is_cpu()) return summarize_hessian_cpu(H);
  HessianSummary summary;
  summary.finite = at::isfinite(H).all().item<bool>();
  if (!summary.finite) return summary;
  summary.asymmetry = (H - H.t()).abs().max().item<double>();
  summary.max_abs = H.abs().max().item<double>();
  return summary;
}

void check_inputs(const at::Tensor& W, const at::Tensor& H, const GptqConfig& config) {
  if (!config.grid) validate(config.quant);
  GPTQ_CHECK(config.quant.group_size == -1 || config.quant.group_size > 0,
             "group_size must be -1 or positive, got ", config.quant.group_size);
  GPTQ_CHECK(config.block_size > 0, "block_size must be positive, got ", config.block_size);
  GPTQ_CHECK(config.damp_percent >= 0 && config.damp_increment >= 0 && config.max_damp_retries >= 0,
             "damp_percent, damp_increment and max_damp_retries must be non-negative");
  GPTQ_CHECK(!config.static_groups || config.quant.group_size > 0,
             "static_groups needs a positive group_size");
  GPTQ_CHECK(W.defined() && W.dim() == 2 && W.size(0) > 0 && W.size(1) > 0,
             "weight must be a non-empty 2-D tensor, got shape ",
             W.defined() ? W.sizes() : at::IntArrayRef{});
  GPTQ_CHECK(at::isFloatingType(W.scalar_type()), "weight must be floating point, got ",
             W.scalar_type());
  GPTQ_CHECK(H.defined() && H.dim() == 2 && H.size(0) == W.size(1) && H.size(1) == W.size(1),
             "hessian must be [", W.size(1), ", ", W.size(1), "] for a weight of shape ", W.sizes(),
             ", got ", H.defined() ? H.sizes() : at::IntArrayRef{});
  GPTQ_CHECK(H.scalar_type() == at::kFloat, "hessian must be float32, got ", H.scalar_type());
  GPTQ_CHECK(H.device() == W.device(), "hessian is on ", H.device(), " but the weight on ",
             W.device());
  const HessianSummary summary = summarize_hessian(H);
  GPTQ_CHECK_NUMERIC(summary.finite, "hessian has NaN or Inf entries");
  GPTQ_CHECK_NUMERIC(summary.asymmetry <= kSymmetryTolerance * summary.max_abs,
             "hessian is not symmetric (max |H - H^T| = ", summary.asymmetry, ", max |H| = ",
             summary.max_abs, ")");
}

struct Factor {
  at::Tensor R;       // upper, R R^T = the damped H in solve order (U = R^-1)
  double damp = 0;
};

// Damps J H J (solve order reversed) with damp * mean(diag) and factors it,
// raising damp by damp_increment until Cholesky succeeds.
Factor factor_with_retries(at::Tensor H_reversed, const GptqConfig& config) {
  at::Tensor diagonal = H_reversed.diagonal();
  const at::Tensor undamped = diagonal.clone();
  const double mean_diag = undamped.mean().item<double>();
  for (int attempt = 0; attempt <= config.max_damp_retries; ++attempt) {
    const double damp = config.damp_percent + attempt * config.damp_increment;
    diagonal.copy_(undamped + damp * mean_diag);
    at::Tensor R = reversed_cholesky_of_flipped(H_reversed);
    if (R.defined()) return {R, damp};
  }
  throw NumericalError(::gptq::detail::concat(
      "cholesky of the damped hessian failed after ", config.max_damp_retries,
      " retries (last damp_percent ",
      config.damp_percent + config.max_damp_retries * config.damp_increment, ")"));
}

// The fitted grids of every group, [n_groups, rows], and how many zeros were raised.
struct GroupGrids {
  at::Tensor scales;
  at::Tensor zeros;
  at::Tensor n_raised;  // int64 [rows] on the device (no sync per group)

  // Writes group g's grid (from the weight columns it covers) into row g.
  void fit(const QuantGrid& grid, const at::Tensor& columns, int64_t group) {
    const QuantParams params = grid.fit(columns);
    scales.select(0, group).copy_(params.scale);
    zeros.select(0, group).copy_(params.zero);
    if (params.raised.defined()) n_raised.add_(params.raised);
  }
};

// One block with per-column tensor ops (any device). Same arithmetic as the
// fused loop; W's block columns end as the dequantized values, codes is the
// block's [rows, count] codes as floats.
void run_block_tensor_ops(at::Tensor& W, const at::Tensor& hinv_block, const at::Tensor& scales,
                          const at::Tensor& zeros, const std::vector<int32_t>& column_group,
                          const QuantGrid& grid, int64_t col_start, at::Tensor& codes,
                          at::Tensor& row_loss) {
  const int64_t count = hinv_block.size(0);
  at::Tensor W1 = W.narrow(1, col_start, count);
  for (int64_t col_idx = 0; col_idx < count; ++col_idx) {
    const at::Tensor w = W1.select(1, col_idx);
    const at::Tensor d = hinv_block[col_idx][col_idx];
    const at::Tensor scale = scales.select(0, column_group[col_idx]);
    const at::Tensor zero = zeros.select(0, column_group[col_idx]);
    const at::Tensor q = grid.quantize(w, scale, zero);
    const at::Tensor deq = grid.dequantize(q, scale, zero);
    const at::Tensor diff = w - deq;
    row_loss.add_(diff * diff / (d * d));
    const at::Tensor scaled_err = diff / d;
    codes.select(1, col_idx).copy_(q);
    if (col_idx + 1 < count) {
      W1.narrow(1, col_idx + 1, count - col_idx - 1)
          .sub_(scaled_err.unsqueeze(1) *
                hinv_block.select(0, col_idx).narrow(0, col_idx + 1, count - col_idx - 1).unsqueeze(0));
    }
    w.copy_(deq);
  }
}

// The solve's working tensors. Codes and Q reach their outputs by one of two
// routes (block_kernel.h): the CPU kernel writes them at original columns and
// turns delta's block into W0 - Q itself; the other loops leave Q in W and
// codes in solve order, and the solver does the rest.
struct SolveState {
  at::Tensor W;            // solve order; a block's columns are updated before it runs
  at::Tensor delta;        // W0 - Q of the solved columns (W0 on the running block)
  at::Tensor codes;        // uint8 [rows, cols]
  at::Tensor dequantized;  // Q in original order (CPU kernel route only)
  at::Tensor row_loss;
  const int64_t* out_columns = nullptr;  // host perm: original column of each solve column
  bool original_order = false;           // the CPU kernel route
};

void run_block(BlockLoop loop, SolveState& state, const at::Tensor& hinv_block,
               const at::Tensor& scales, const at::Tensor& zeros,
               const std::vector<int32_t>& column_group, const QuantGrid& grid, int64_t col_start) {
  const int64_t count = hinv_block.size(0);
  if (loop == BlockLoop::kTensorOps) {
    at::Tensor block_codes = state.codes.narrow(1, col_start, count);
    at::Tensor codes_float = at::empty(block_codes.sizes(), state.W.options());
    run_block_tensor_ops(state.W, hinv_block, scales, zeros, column_group, grid, col_start,
                         codes_float, state.row_loss);
    block_codes.copy_(codes_float);
    return;
  }
  // The fused kernels run affine integer grids only (resolve_loop checked).
  const int maxq = grid.affine()->max_code;
  detail::BlockProblem problem;
  problem.W = state.W.data_ptr<float>();
  problem.n_rows = state.W.size(0);
  problem.w_stride = state.W.size(1);
  problem.col_start = col_start;
  problem.n_block_cols = count;
  problem.hinv_block = hinv_block.data_ptr<float>();
  problem.scales = scales.data_ptr<float>();
  problem.zeros = zeros.data_ptr<float>();
  problem.maxq = maxq;
  problem.codes = state.codes.data_ptr<uint8_t>();
  problem.row_loss = state.row_loss.data_ptr<float>();
  if (state.W.is_cpu()) {
    problem.column_group = column_group.data();
    problem.delta = state.delta.data_ptr<float>();
    problem.dequantized = state.dequantized.data_ptr<float>();
    problem.out_columns = state.out_columns;
    detail::run_block_cpu(problem);
    return;
  }
#ifdef GPTQ_WITH_CUDA_KERNELS
  const at::Tensor groups_device =
      at::tensor(column_group, at::TensorOptions().dtype(at::kInt)).to(state.W.device());
  problem.column_group = groups_device.data_ptr<int32_t>();
  detail::run_block_cuda(problem);
#else
  GPTQ_ASSERT(false, "fused block loop requested on ", state.W.device());
#endif
}

BlockLoop resolve_loop(BlockLoop requested, const at::Tensor& W, int64_t block_size,
                       const QuantGrid& grid) {
  if (!grid.affine()) return BlockLoop::kTensorOps;
  if (requested != BlockLoop::kAuto) return requested;
  if (W.is_cpu()) return BlockLoop::kFused;
#ifdef GPTQ_WITH_CUDA_KERNELS
  if (W.is_cuda() && block_size <= detail::kCudaMaxBlockCols) return BlockLoop::kFused;
#endif
  return BlockLoop::kTensorOps;
}

}  // namespace

namespace detail {

QuantizedWeight gptq_quantize_with(const at::Tensor& W_in, const at::Tensor& H,
                                   const GptqConfig& config, BlockLoop requested_loop) {
  check_inputs(W_in, H, config);
  const QuantConfig& quant = config.quant;
  const std::shared_ptr<const QuantGrid> grid_holder = grid_of(config);
  const QuantGrid& grid = *grid_holder;
  const int64_t n_rows = W_in.size(0), n_cols = W_in.size(1);
  const int64_t group_size = quant.group_size > 0 ? quant.group_size : n_cols;
  const int64_t n_groups = (n_cols + group_size - 1) / group_size;
  const BlockLoop loop = resolve_loop(requested_loop, W_in, config.block_size, grid);

  const at::Tensor dead = H.diagonal() == 0;
  const at::Tensor diag = at::where(dead, at::ones_like(H.diagonal()), H.diagonal());
  // Solve order: act-order sorts columns by descending diag(H).
  const at::Tensor perm = config.desc_act
      ? std::get<1>(at::sort(diag, /*stable=*/true, /*dim=*/0, /*descending=*/true))
      : at::arange(n_cols, H.options().dtype(at::kLong));
  const at::Tensor perm_host = perm.cpu();
  const int64_t* perm_data = perm_host.data_ptr<int64_t>();
  // W in solve order, dead columns zeroed (checked finite on the way).
  const at::Tensor W_float = W_in.to(at::kFloat);
  at::Tensor W = gather_solve_order(W_float, perm, dead);

  const auto float_options = W.options();
  GroupGrids grids{at::empty({n_groups, n_rows}, float_options),
                   at::empty({n_groups, n_rows}, float_options),
                   at::zeros({n_rows}, float_options.dtype(at::kLong))};
  const at::Tensor& scales = grids.scales;
  const at::Tensor& zeros = grids.zeros;
  // Row grids ignore column order but, as in the reference, see W before
  // dead columns are zeroed.
  if (quant.group_size == -1) grids.fit(grid, W_float, 0);
  // A grid fitted jointly (ggml K-quants) is static whatever the scheme says.
  const bool static_groups = config.static_groups || grid.fits_jointly();
  GPTQ_CHECK(!static_groups || quant.group_size > 0, "static groups need a positive group_size");
  std::optional<QuantParams> joint;
  if (static_groups) {
    const at::Tensor original = W_float.masked_fill(dead.unsqueeze(0), 0.0);
    joint = grid.fit_all(original, diag.masked_fill(dead, 0.0), group_size);
    GPTQ_ASSERT(joint || !grid.fits_jointly(), "a grid that fits jointly returned no fit_all");
  }
  if (joint) {
    scales.copy_(joint->scale);
    zeros.copy_(joint->zero);
  } else if (static_groups) {
    const at::Tensor original = W_float.masked_fill(dead.unsqueeze(0), 0.0);
    for (int64_t group = 0; group < n_groups; ++group) {
      const int64_t start = group * group_size;
      grids.fit(grid, original.narrow(1, start, std::min(group_size, n_cols - start)), group);
    }
  }

  at::Tensor H_reversed = permute_symmetric(H, perm.flip(0));
  H_reversed.diagonal().masked_fill_(dead.index_select(0, perm.flip(0)), 1.0);
  const Factor factor = factor_with_retries(std::move(H_reversed), config);
  const at::Tensor& R = factor.R;

  // Group of each solve-order column: with static groups a column keeps the
  // group of its original index; otherwise groups follow solve order.
  std::vector<int32_t> column_group(n_cols);
  for (int64_t col = 0; col < n_cols; ++col) {
    const int64_t source = static_groups ? perm_data[col] : col;
    column_group[col] = quant.group_size == -1 ? 0 : static_cast<int32_t>(source / group_size);
  }

  // Left-looking blocks: block [s, e) first receives every earlier block's
  // error at once, W[:, s:e] += (W0 - Q)[:, :s] R[:s, s:e] U[s:e, s:e], which
  // equals the reference's lazy updates W[:, s:e] -= Err[:, :s] Hinv[:s, s:e]
  // (factorization.h) without forming Hinv: U is only needed on the block.
  // A dynamic group that starts in the block and ends past it takes its grid
  // from the updated columns up to its end (the reference's W at that
  // moment), so the update then spans to the group's end.
  SolveState state;
  state.W = std::move(W);
  state.delta = at::empty({n_rows, n_cols}, float_options);
  state.codes = at::empty({n_rows, n_cols}, float_options.dtype(at::kByte));
  state.row_loss = at::zeros({n_rows}, float_options);
  state.original_order = loop == BlockLoop::kFused && state.W.is_cpu();
  if (state.original_order) {
    state.dequantized = at::empty({n_rows, n_cols}, float_options);
    state.out_columns = perm_data;
  }
  const bool dynamic_groups = quant.group_size > 0 && !static_groups;
  // Each block's pull of earlier errors and, when a group runs past the
  // block, the updated copy of that longer span: reused block after block.
  const int64_t max_span = config.block_size + (dynamic_groups ? group_size : 0);
  at::Tensor pull_buffer =
      at::empty({n_rows * max_span * (dynamic_groups ? 2 : 1)}, float_options);
  for (int64_t block_start = 0; block_start < n_cols; block_start += config.block_size) {
    const int64_t block_end = std::min(block_start + config.block_size, n_cols);
    const int64_t count = block_end - block_start;
    const int64_t first_group = (block_start + group_size - 1) / group_size * group_size;
    int64_t span_end = block_end;
    if (dynamic_groups) {
      for (int64_t start = first_group; start < block_end; start += group_size) {
        span_end = std::max(span_end, std::min(start + group_size, n_cols));
      }
    }
    const int64_t span = span_end - block_start;
    const at::Tensor U_span =
        upper_triangular_inverse(R.narrow(0, block_start, span).narrow(1, block_start, span));
    at::Tensor W_block = state.W.narrow(1, block_start, count);
    at::Tensor delta_block = state.delta.narrow(1, block_start, count);
    delta_block.copy_(W_block);
    at::Tensor current = state.W.narrow(1, block_start, span);
    if (block_start > 0) {
      at::Tensor earlier_error = pull_buffer.narrow(0, 0, n_rows * span).view({n_rows, span});
      at::mm_out(earlier_error, state.delta.narrow(1, 0, block_start),
                 R.narrow(0, 0, block_start).narrow(1, block_start, span));
      if (span == count) {
        W_block.addmm_(earlier_error, U_span);  // in place: W's row stride suits BLAS
      } else {
        // Columns past the block get their own pull later: update a copy.
        at::Tensor updated =
            pull_buffer.narrow(0, n_rows * span, n_rows * span).view({n_rows, span});
        at::addmm_out(updated, current, earlier_error, U_span);
        W_block.copy_(updated.narrow(1, 0, count));
        current = updated;
      }
    }
    if (dynamic_groups) {
      for (int64_t start = first_group; start < block_end; start += group_size) {
        grids.fit(grid, current.narrow(1, start - block_start, std::min(group_size, n_cols - start)),
                  start / group_size);
      }
    }
    const at::Tensor hinv_block = U_span.narrow(0, 0, count).narrow(1, 0, count).contiguous();
    const std::vector<int32_t> block_groups(column_group.begin() + block_start,
                                            column_group.begin() + block_end);
    run_block(loop, state, hinv_block, scales, zeros, block_groups, grid, block_start);
    if (!state.original_order) delta_block.sub_(W_block);
  }
  state.delta = at::Tensor();
  pull_buffer = at::Tensor();

  QuantizedWeight result;
  result.loss = state.row_loss.sum().item<double>() / 2;
  result.row_loss = state.row_loss;
  result.zero_raised = grids.n_raised;
  result.damp_used = factor.damp;
  if (!std::isfinite(result.loss) || !at::isfinite(scales).all().item<bool>()) {
    throw NumericalError("gptq produced a non-finite loss or scale (weights or hessian out of range)");
  }
  at::Tensor g_idx = at::empty({n_cols}, at::kInt);
  int32_t* g_idx_data = g_idx.data_ptr<int32_t>();
  for (int64_t col = 0; col < n_cols; ++col) g_idx_data[perm_data[col]] = column_group[col];
  if (state.original_order) {
    result.codes = std::move(state.codes);
    result.dequantized = std::move(state.dequantized);
  } else if (config.desc_act) {
    result.codes = scatter_original_order(state.codes, perm);
    result.dequantized = scatter_original_order(state.W, perm);
  } else {
    result.codes = std::move(state.codes);
    result.dequantized = std::move(state.W);
  }
  result.scales = scales;
  result.grid_zeros = zeros;
  result.zeros = zeros.to(at::kInt);
  result.g_idx = g_idx.to(result.dequantized.device());
  return result;
}

}  // namespace detail

std::shared_ptr<const QuantGrid> grid_of(const GptqConfig& config) {
  if (config.grid) return config.grid;
  return std::make_shared<MinMaxIntegerGrid>(config.quant);
}

QuantizedWeight gptq_quantize(const at::Tensor& W, const at::Tensor& H, const GptqConfig& config) {
  return detail::gptq_quantize_with(W, H, config, detail::BlockLoop::kAuto);
}

}  // namespace gptq::solver
