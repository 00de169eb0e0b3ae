#include "gptq/solver/gptq.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "block_kernel.h"
#include "gptq/core/error.h"
#include "gptq/solver/factorization.h"
#include "gptq_impl.h"

namespace gptq::solver {
namespace {

using detail::BlockLoop;

// Relative asymmetry of H tolerated (rounding of a full X^T X GEMM is ~1e-7).
constexpr double kSymmetryTolerance = 1e-4;

// max |H - H^T| and whether every entry is finite, in one tiled pass (CPU).
std::pair<double, bool> asymmetry_and_finite_cpu(const at::Tensor& H) {
  const at::Tensor Hc = H.contiguous();
  const float* data = Hc.data_ptr<float>();
  const int64_t n = Hc.size(0);
  constexpr int64_t kTile = 64;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  std::vector<double> tile_max(n_tiles, 0.0);
  std::vector<char> tile_finite(n_tiles, 1);
  at::parallel_for(0, n_tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t tile_row = begin; tile_row < end; ++tile_row) {
      const int64_t row0 = tile_row * kTile, row1 = std::min(row0 + kTile, n);
      float worst = 0;
      bool finite = true;
      for (int64_t col0 = 0; col0 <= row0; col0 += kTile) {
        for (int64_t row = row0; row < row1; ++row) {
          const int64_t col1 = std::min({col0 + kTile, n, row + 1});
          for (int64_t col = col0; col < col1; ++col) {
            const float lower = data[row * n + col], upper = data[col * n + row];
            finite = finite && std::isfinite(lower) && std::isfinite(upper);
            worst = std::max(worst, std::abs(lower - upper));
          }
        }
      }
      tile_max[tile_row] = worst;
      tile_finite[tile_row] = finite;
    }
  });
  const bool finite = std::all_of(tile_finite.begin(), tile_finite.end(), [](char f) { return f; });
  return {*std::max_element(tile_max.begin(), tile_max.end()), finite};
}

void check_inputs(const at::Tensor& W, const at::Tensor& H, const GptqConfig& config) {
  validate(config.quant);
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
  double asymmetry = 0;
  bool finite = true;
  if (H.is_cpu()) {
    std::tie(asymmetry, finite) = asymmetry_and_finite_cpu(H);
  } else {
    finite = at::isfinite(H).all().item<bool>();
    if (finite) asymmetry = (H - H.t()).abs().max().item<double>();
  }
  GPTQ_CHECK(finite, "hessian has NaN or Inf entries");
  const double scale = H.abs().max().item<double>();
  GPTQ_CHECK(asymmetry <= kSymmetryTolerance * scale, "hessian is not symmetric (max |H - H^T| = ",
             asymmetry, ", max |H| = ", scale, ")");
}

// H[p][:, p] in one pass on CPU (rows gathered whole, columns from cache).
at::Tensor permute_symmetric(const at::Tensor& H, const at::Tensor& perm) {
  if (!H.is_cpu()) return H.index_select(0, perm).index_select(1, perm);
  const at::Tensor Hc = H.contiguous();
  const at::Tensor p = perm.to(at::kLong).contiguous();
  const int64_t n = Hc.size(0);
  at::Tensor out = at::empty_like(Hc);
  const float* src = Hc.data_ptr<float>();
  const int64_t* idx = p.data_ptr<int64_t>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float* src_row = src + idx[row] * n;
      float* dst_row = dst + row * n;
      for (int64_t col = 0; col < n; ++col) dst_row[col] = src_row[idx[col]];
    }
  });
  return out;
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

// Writes group g's grid (from the weight columns it covers) into row g.
void set_group_params(const at::Tensor& columns, const QuantConfig& quant, int64_t group,
                      at::Tensor& scales, at::Tensor& zeros) {
  const QuantParams params = find_params(columns, quant);
  scales.select(0, group).copy_(params.scale);
  zeros.select(0, group).copy_(params.zero);
}

// One block with per-column tensor ops (any device). Same arithmetic as the
// fused loop; W's block columns end as the dequantized values.
void run_block_tensor_ops(at::Tensor& W, const at::Tensor& hinv_block, const at::Tensor& scales,
                          const at::Tensor& zeros, const std::vector<int32_t>& column_group,
                          int maxq, int64_t col_start, at::Tensor& codes, at::Tensor& row_loss) {
  const int64_t count = hinv_block.size(0);
  at::Tensor W1 = W.narrow(1, col_start, count);
  for (int64_t col_idx = 0; col_idx < count; ++col_idx) {
    const at::Tensor w = W1.select(1, col_idx);
    const at::Tensor d = hinv_block[col_idx][col_idx];
    const at::Tensor scale = scales.select(0, column_group[col_idx]);
    const at::Tensor zero = zeros.select(0, column_group[col_idx]);
    const at::Tensor q = quantize_codes(w, scale, zero, maxq);
    const at::Tensor deq = dequantize_codes(q, scale, zero);
    const at::Tensor diff = w - deq;
    row_loss.add_(diff * diff / (d * d));
    const at::Tensor scaled_err = diff / d;
    codes.select(1, col_start + col_idx).copy_(q);
    if (col_idx + 1 < count) {
      W1.narrow(1, col_idx + 1, count - col_idx - 1)
          .sub_(scaled_err.unsqueeze(1) *
                hinv_block.select(0, col_idx).narrow(0, col_idx + 1, count - col_idx - 1).unsqueeze(0));
    }
    w.copy_(deq);
  }
}

void run_block(BlockLoop loop, at::Tensor& W, const at::Tensor& hinv_block,
               const at::Tensor& scales, const at::Tensor& zeros,
               const std::vector<int32_t>& column_group, int maxq, int64_t col_start,
               at::Tensor& codes, at::Tensor& row_loss) {
  if (loop == BlockLoop::kTensorOps) {
    at::Tensor codes_float = codes.to(at::kFloat);
    run_block_tensor_ops(W, hinv_block, scales, zeros, column_group, maxq, col_start, codes_float,
                         row_loss);
    codes.copy_(codes_float);
    return;
  }
  detail::BlockProblem problem;
  problem.W = W.data_ptr<float>();
  problem.n_rows = W.size(0);
  problem.w_stride = W.size(1);
  problem.col_start = col_start;
  problem.n_block_cols = hinv_block.size(0);
  problem.hinv_block = hinv_block.data_ptr<float>();
  problem.scales = scales.data_ptr<float>();
  problem.zeros = zeros.data_ptr<float>();
  problem.maxq = maxq;
  problem.codes = codes.data_ptr<uint8_t>();
  problem.row_loss = row_loss.data_ptr<float>();
  if (W.is_cpu()) {
    problem.column_group = column_group.data();
    detail::run_block_cpu(problem);
    return;
  }
#ifdef GPTQ_WITH_CUDA_KERNELS
  const at::Tensor groups_device =
      at::tensor(column_group, at::TensorOptions().dtype(at::kInt)).to(W.device());
  problem.column_group = groups_device.data_ptr<int32_t>();
  detail::run_block_cuda(problem);
#else
  GPTQ_ASSERT(false, "fused block loop requested on ", W.device());
#endif
}

BlockLoop resolve_loop(BlockLoop requested, const at::Tensor& W, int64_t block_size) {
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
  const int maxq = max_code(quant);
  const int64_t n_rows = W_in.size(0), n_cols = W_in.size(1);
  const int64_t group_size = quant.group_size > 0 ? quant.group_size : n_cols;
  const int64_t n_groups = (n_cols + group_size - 1) / group_size;
  const BlockLoop loop = resolve_loop(requested_loop, W_in, config.block_size);

  at::Tensor W = W_in.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
  GPTQ_CHECK(at::isfinite(W).all().item<bool>(), "weight has NaN or Inf entries");
  const auto float_options = W.options();
  at::Tensor scales = at::empty({n_groups, n_rows}, float_options);
  at::Tensor zeros = at::empty({n_groups, n_rows}, float_options);
  if (quant.group_size == -1) set_group_params(W, quant, 0, scales, zeros);

  const at::Tensor dead = H.diagonal() == 0;
  W.masked_fill_(dead.unsqueeze(0), 0.0);
  const at::Tensor diag = at::where(dead, at::ones_like(H.diagonal()), H.diagonal());
  if (config.static_groups) {
    for (int64_t group = 0; group < n_groups; ++group) {
      const int64_t start = group * group_size;
      set_group_params(W.narrow(1, start, std::min(group_size, n_cols - start)), quant, group,
                       scales, zeros);
    }
  }

  // Solve order: act-order sorts columns by descending diag(H).
  const at::Tensor perm = config.desc_act
      ? std::get<1>(at::sort(diag, /*stable=*/true, /*dim=*/0, /*descending=*/true))
      : at::arange(n_cols, H.options().dtype(at::kLong));
  const at::Tensor perm_host = perm.cpu();
  const int64_t* perm_data = perm_host.data_ptr<int64_t>();
  if (config.desc_act) W = W.index_select(1, perm).contiguous();

  at::Tensor H_reversed = permute_symmetric(H, perm.flip(0));
  H_reversed.diagonal().masked_fill_(dead.index_select(0, perm.flip(0)), 1.0);
  const Factor factor = factor_with_retries(std::move(H_reversed), config);
  const at::Tensor& R = factor.R;

  // Group of each solve-order column: with static groups a column keeps the
  // group of its original index; otherwise groups follow solve order.
  std::vector<int32_t> column_group(n_cols);
  for (int64_t col = 0; col < n_cols; ++col) {
    const int64_t source = config.static_groups ? perm_data[col] : col;
    column_group[col] = quant.group_size == -1 ? 0 : static_cast<int32_t>(source / group_size);
  }

  // Left-looking blocks: block [s, e) first receives every earlier block's
  // error at once, W[:, s:e] += (W0 - Q)[:, :s] R[:s, s:e] U[s:e, s:e], which
  // equals the reference's lazy updates W[:, s:e] -= Err[:, :s] Hinv[:s, s:e]
  // (factorization.h) without forming Hinv: U is only needed on the block.
  // A dynamic group that starts in the block and ends past it takes its grid
  // from the updated columns up to its end (the reference's W at that
  // moment), so the update then spans to the group's end.
  at::Tensor codes = at::empty({n_rows, n_cols}, float_options.dtype(at::kByte));
  at::Tensor row_loss = at::zeros({n_rows}, float_options);
  at::Tensor delta = at::empty({n_rows, n_cols}, float_options);  // W0 - Q, solved columns
  const bool dynamic_groups = quant.group_size > 0 && !config.static_groups;
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
    at::Tensor W_block = W.narrow(1, block_start, count);
    delta.narrow(1, block_start, count).copy_(W_block);
    at::Tensor current = W.narrow(1, block_start, span);
    if (block_start > 0) {
      const at::Tensor earlier_error =
          delta.narrow(1, 0, block_start).mm(R.narrow(0, 0, block_start).narrow(1, block_start, span));
      current = current.addmm(earlier_error, U_span);
      W_block.copy_(current.narrow(1, 0, count));
    }
    if (dynamic_groups) {
      for (int64_t start = first_group; start < block_end; start += group_size) {
        set_group_params(current.narrow(1, start - block_start, std::min(group_size, n_cols - start)),
                         quant, start / group_size, scales, zeros);
      }
    }
    const at::Tensor hinv_block = U_span.narrow(0, 0, count).narrow(1, 0, count).contiguous();
    const std::vector<int32_t> block_groups(column_group.begin() + block_start,
                                            column_group.begin() + block_end);
    run_block(loop, W, hinv_block, scales, zeros, block_groups, maxq, block_start, codes, row_loss);
    delta.narrow(1, block_start, count).sub_(W_block);
  }
  delta = at::Tensor();

  QuantizedWeight result;
  result.loss = row_loss.sum().item<double>() / 2;
  result.damp_used = factor.damp;
  if (!std::isfinite(result.loss) || !at::isfinite(scales).all().item<bool>()) {
    throw NumericalError("gptq produced a non-finite loss or scale (weights or hessian out of range)");
  }
  at::Tensor g_idx = at::empty({n_cols}, at::kInt);
  int32_t* g_idx_data = g_idx.data_ptr<int32_t>();
  for (int64_t col = 0; col < n_cols; ++col) g_idx_data[perm_data[col]] = column_group[col];
  if (config.desc_act) {
    const at::Tensor inverse = at::argsort(perm);
    codes = codes.index_select(1, inverse);
    W = W.index_select(1, inverse);
  }
  result.codes = codes;
  result.dequantized = W;
  result.scales = scales;
  result.zeros = zeros.to(at::kInt);
  result.g_idx = g_idx.to(W.device());
  return result;
}

}  // namespace detail

QuantizedWeight gptq_quantize(const at::Tensor& W, const at::Tensor& H, const GptqConfig& config) {
  return detail::gptq_quantize_with(W, H, config, detail::BlockLoop::kAuto);
}

}  // namespace gptq::solver
