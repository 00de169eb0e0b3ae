// ggml's K-quant grid search, one super-block at a time, in float32 with
// ggml's order of operations (sequential sums) so that rows without
// importance get ggml's own scales. Rows run in parallel.
#include "kquant_fit.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "gptq/core/error.h"

namespace gptq::gguf::detail {
namespace {

// ggml's GROUP_MAX_EPS: a group below it counts as all zero.
constexpr float kGroupMaxEps = 1e-15f;

// ggml's nearest_int: adding 1.5 * 2^23 leaves the integer, rounded half to
// even, in the low mantissa bits (no libm call in the hot loops). Arguments
// stay far inside +-2^22 here; the clamp only guards degenerate input.
int nearest_int(float value) {
  const float shifted = std::clamp(value, -4194303.0f, 4194303.0f) + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007fffff) - 0x00400000;
}

// ggml stores a possibly negative int in a uint8_t and then takes MIN(63, .):
// a negative sub-scale (possible only for degenerate groups) becomes 63.
uint8_t as_six_bits(int value) { return static_cast<uint8_t>(std::min(63, value & 0xFF)); }

// make_qkx2_quants / make_qkx3_quants (the same search given weights): the
// best (scale, min <= 0) for x ~ scale * l + min, l in [0, max_code], trying
// the min-max grid and then nstep + 1 stretched grids refitted by weighted
// least squares. Returns scale and sets the_min = -min.
float fit_min_grid_group(int n, int max_code, const float* x, const float* weights, float rmin,
                         float rdelta, int nstep, float& the_min) {
  float lo = x[0], hi = x[0];
  float sum_w = 0, sum_x = 0;
  for (int idx = 0; idx < n; ++idx) {
    lo = std::min(lo, x[idx]);
    hi = std::max(hi, x[idx]);
    sum_w += weights[idx];
    sum_x += weights[idx] * x[idx];
  }
  if (lo > 0) lo = 0;
  if (hi <= lo) {
    the_min = -lo;
    return 0.0f;
  }
  float iscale = max_code / (hi - lo);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int idx = 0; idx < n; ++idx) {
    const int level = std::clamp(nearest_int(iscale * (x[idx] - lo)), 0, max_code);
    const float diff = scale * level + lo - x[idx];
    best_error += weights[idx] * (diff * diff);
  }
  std::array<uint8_t, 32> levels{};
  for (int step = 0; step <= nstep; ++step) {
    iscale = (rmin + rdelta * step + max_code) / (hi - lo);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int idx = 0; idx < n; ++idx) {
      const int level = std::clamp(nearest_int(iscale * (x[idx] - lo)), 0, max_code);
      levels[idx] = static_cast<uint8_t>(level);
      const float w = weights[idx];
      sum_l += w * level;
      sum_l2 += w * level * level;
      sum_xl += w * level * x[idx];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float error = 0;
    for (int idx = 0; idx < n; ++idx) {
      const float diff = this_scale * levels[idx] + this_min - x[idx];
      error += weights[idx] * (diff * diff);
    }
    if (error < best_error) {
      best_error = error;
      scale = this_scale;
      lo = this_min;
    }
  }
  the_min = -lo;
  return scale;
}

// make_qp_quants: 6-bit levels of the non-negative values x (the sub-block
// scales or mins) under one super-block scale, weighted by each group's
// weight sum; returns that scale and writes the levels.
float fit_super_scale(int n, int max_code, const float* x, const float* weights, uint8_t* levels) {
  float hi = 0;
  for (int idx = 0; idx < n; ++idx) hi = std::max(hi, x[idx]);
  if (hi < kGroupMaxEps) {
    std::fill(levels, levels + n, uint8_t{0});
    return 0.0f;
  }
  auto weighted_error = [&](float iscale, bool cap) {
    const float scale = 1 / iscale;
    float error = 0;
    for (int idx = 0; idx < n; ++idx) {
      int level = nearest_int(iscale * x[idx]);
      if (cap) level = std::min(max_code, level);
      const float diff = x[idx] - scale * level;
      error += weights[idx] * diff * diff;
    }
    return error;
  };
  float iscale = max_code / hi;
  float best_error = weighted_error(iscale, false);
  for (int step = -4; step <= 4; ++step) {
    if (step == 0) continue;
    const float candidate = (0.1f * step + max_code) / hi;
    const float error = weighted_error(candidate, true);
    if (error < best_error) {
      best_error = error;
      iscale = candidate;
    }
  }
  std::array<int, 16> level{};
  float sum_lx = 0, sum_l2 = 0;
  for (int idx = 0; idx < n; ++idx) {
    level[idx] = std::min(max_code, nearest_int(iscale * x[idx]));
    sum_lx += weights[idx] * x[idx] * level[idx];
    sum_l2 += weights[idx] * level[idx] * level[idx];
  }
  // Coordinate descent on the levels, keeping a change only when it raises
  // the least-squares gain sum_lx^2 / sum_l2.
  for (int round = 0; round < 5; ++round) {
    int n_changed = 0;
    for (int idx = 0; idx < n; ++idx) {
      const float w = weights[idx];
      float lx = sum_lx - w * x[idx] * level[idx];
      float l2 = sum_l2 - w * level[idx] * level[idx];
      if (!(lx > 0 && l2 > 0)) continue;
      const int candidate = std::min(max_code, nearest_int(x[idx] * l2 / lx));
      if (candidate == level[idx]) continue;
      lx += w * x[idx] * candidate;
      l2 += w * candidate * candidate;
      if (lx * lx * sum_l2 > sum_lx * sum_lx * l2) {
        level[idx] = candidate;
        sum_lx = lx;
        sum_l2 = l2;
        ++n_changed;
      }
    }
    if (n_changed == 0) break;
  }
  for (int idx = 0; idx < n; ++idx) levels[idx] = static_cast<uint8_t>(level[idx]);
  return sum_l2 > 0 ? sum_lx / sum_l2 : 0.0f;
}

// make_qx_quants with rmse_type 1: the best signed scale for x ~ scale * l,
// l in [-max_code, max_code - 1], over 19 grids around -max_code / max
// (max: the value of largest magnitude); weights x^2 unless given.
float fit_signed_group(int n, int max_code, const float* x, const float* given_weights) {
  float amax = 0, signed_max = 0;
  for (int idx = 0; idx < n; ++idx) {
    if (std::fabs(x[idx]) > amax) {
      amax = std::fabs(x[idx]);
      signed_max = x[idx];
    }
  }
  if (amax < kGroupMaxEps) return 0.0f;
  auto weight = [&](int idx) { return given_weights ? given_weights[idx] : x[idx] * x[idx]; };
  auto sums = [&](float iscale, float& sum_lx, float& sum_l2) {
    sum_lx = 0;
    sum_l2 = 0;
    for (int idx = 0; idx < n; ++idx) {
      const int level = std::clamp(nearest_int(iscale * x[idx]), -max_code, max_code - 1);
      const float w = weight(idx);
      sum_lx += w * x[idx] * level;
      sum_l2 += w * level * level;
    }
  };
  float sum_lx, sum_l2;
  sums(-max_code / signed_max, sum_lx, sum_l2);
  float scale = sum_l2 ? sum_lx / sum_l2 : 0.0f;
  float best = scale * sum_lx;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    sums(-(max_code + 0.1f * step) / signed_max, sum_lx, sum_l2);
    if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

// One Q4_K/Q5_K super-block: products written to scale_out/zero_out[group].
void fit_min_super_block(const float* x, const float* importance, int max_code, float* scale_out,
                         float* zero_out) {
  constexpr int kGroups = 8, kGroup = 32;
  std::array<float, kGroups> scales{}, mins{}, group_weight{};
  std::array<float, kGroup> weights{};
  std::array<uint8_t, kGroups> ls{}, lm{};
  float d = 0, dmin = 0;
  if (importance == nullptr) {
    // quantize_row_q{4,5}_K_ref.
    const float rmin = max_code == 15 ? -1.0f : -0.5f;
    const int nstep = max_code == 15 ? 20 : 15;
    float max_scale = 0, max_min = 0;
    for (int group = 0; group < kGroups; ++group) {
      const float* xg = x + group * kGroup;
      float sum_x2 = 0;
      for (int idx = 0; idx < kGroup; ++idx) sum_x2 += xg[idx] * xg[idx];
      const float av_x = std::sqrt(sum_x2 / kGroup);
      for (int idx = 0; idx < kGroup; ++idx) weights[idx] = av_x + std::fabs(xg[idx]);
      scales[group] =
          fit_min_grid_group(kGroup, max_code, xg, weights.data(), rmin, 0.1f, nstep, mins[group]);
      max_scale = std::max(max_scale, scales[group]);
      max_min = std::max(max_min, mins[group]);
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    for (int group = 0; group < kGroups; ++group) {
      ls[group] = as_six_bits(nearest_int(inv_scale * scales[group]));
      lm[group] = as_six_bits(nearest_int(inv_min * mins[group]));
    }
    d = round_to_half(max_scale / 63.0f);
    dmin = round_to_half(max_min / 63.0f);
  } else {
    // quantize_row_q{4,5}_K_impl.
    float sum_x2 = 0;
    for (int idx = 0; idx < kSuperBlock; ++idx) sum_x2 += x[idx] * x[idx];
    const float sigma2 = 2 * sum_x2 / kSuperBlock;
    for (int group = 0; group < kGroups; ++group) {
      const float* xg = x + group * kGroup;
      const float* qw = importance + group * kGroup;
      float sum_w = 0;
      for (int idx = 0; idx < kGroup; ++idx) {
        weights[idx] = qw[idx] * std::sqrt(sigma2 + xg[idx] * xg[idx]);
        sum_w += weights[idx];
      }
      group_weight[group] = sum_w;
      scales[group] =
          fit_min_grid_group(kGroup, max_code, xg, weights.data(), -0.9f, 0.05f, 36, mins[group]);
    }
    d = round_to_half(fit_super_scale(kGroups, 63, scales.data(), group_weight.data(), ls.data()));
    dmin = round_to_half(fit_super_scale(kGroups, 63, mins.data(), group_weight.data(), lm.data()));
    for (int group = 0; group < kGroups; ++group) {
      ls[group] = as_six_bits(ls[group]);
      lm[group] = as_six_bits(lm[group]);
    }
  }
  // A negative d (only from degenerate all-negative sub-scales) is dropped,
  // and + 0.0f turns -0 into +0: the codec's split of these products then
  // decodes to the very same bits.
  d = std::max(d, 0.0f);
  dmin = std::max(dmin, 0.0f);
  for (int group = 0; group < kGroups; ++group) {
    scale_out[group] = d * ls[group] + 0.0f;
    zero_out[group] = dmin * lm[group] + 0.0f;
  }
}

// One Q6_K super-block (quantize_row_q6_K_ref / _impl).
void fit_q6_k_super_block(const float* x, const float* importance, float* scale_out) {
  constexpr int kGroups = 16, kGroup = 16;
  std::array<float, kGroups> scales{};
  float max_scale = 0, max_abs_scale = 0;
  for (int group = 0; group < kGroups; ++group) {
    scales[group] = fit_signed_group(kGroup, 32, x + group * kGroup,
                                     importance ? importance + group * kGroup : nullptr);
    if (std::fabs(scales[group]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[group]);
      max_scale = scales[group];
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::fill(scale_out, scale_out + kGroups, 0.0f);
    return;
  }
  const float iscale = -128.0f / max_scale;
  const float d = round_to_half(1 / iscale);
  // A d that underflows fp16 stores as an all-zero super-block (d = +0).
  if (d == 0) {
    std::fill(scale_out, scale_out + kGroups, 0.0f);
    return;
  }
  for (int group = 0; group < kGroups; ++group) {
    const int sc = std::min(127, nearest_int(iscale * scales[group]));
    scale_out[group] = d * static_cast<float>(static_cast<int8_t>(sc));
  }
}

struct RowProblem {
  at::Tensor W;           // float32 [rows, cols] CPU contiguous
  at::Tensor importance;  // float32 [cols] CPU contiguous or undefined
};

RowProblem prepare(const at::Tensor& W, const at::Tensor& importance) {
  GPTQ_ASSERT(W.defined() && W.dim() == 2 && W.size(1) % kSuperBlock == 0, "K-quant rows of ",
              W.defined() ? W.sizes() : at::IntArrayRef{}, " are not whole super-blocks");
  RowProblem problem{W.to(at::kCPU, at::kFloat).contiguous(), at::Tensor()};
  if (importance.defined()) {
    GPTQ_ASSERT(importance.dim() == 1 && importance.size(0) == W.size(1),
                "importance must be [cols]");
    problem.importance = importance.to(at::kCPU, at::kFloat).contiguous();
  }
  return problem;
}

}  // namespace

float round_to_half(float value) { return static_cast<float>(c10::Half(value)); }

bool is_half_exact(float value) { return round_to_half(value) == value; }

solver::QuantParams fit_k_min_grid(const at::Tensor& W_in, const at::Tensor& importance_in,
                                   int max_code) {
  const RowProblem problem = prepare(W_in, importance_in);
  const int64_t n_rows = problem.W.size(0), n_cols = problem.W.size(1);
  const int64_t n_groups = n_cols / 32;
  at::Tensor scales = at::empty({n_rows, n_groups}, problem.W.options());
  at::Tensor zeros = at::empty({n_rows, n_groups}, problem.W.options());
  const float* w = problem.W.data_ptr<float>();
  const float* qw = problem.importance.defined() ? problem.importance.data_ptr<float>() : nullptr;
  float* scale_out = scales.data_ptr<float>();
  float* zero_out = zeros.data_ptr<float>();
  at::parallel_for(0, n_rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t start = 0; start < n_cols; start += kSuperBlock) {
        const int64_t group = row * n_groups + start / 32;
        fit_min_super_block(w + row * n_cols + start, qw ? qw + start : nullptr, max_code,
                            scale_out + group, zero_out + group);
      }
    }
  });
  return {scales.t().contiguous(), zeros.t().contiguous(), at::Tensor()};
}

solver::QuantParams fit_q6_k_grid(const at::Tensor& W_in, const at::Tensor& importance_in) {
  const RowProblem problem = prepare(W_in, importance_in);
  const int64_t n_rows = problem.W.size(0), n_cols = problem.W.size(1);
  const int64_t n_groups = n_cols / 16;
  at::Tensor scales = at::empty({n_rows, n_groups}, problem.W.options());
  const float* w = problem.W.data_ptr<float>();
  const float* qw = problem.importance.defined() ? problem.importance.data_ptr<float>() : nullptr;
  float* scale_out = scales.data_ptr<float>();
  at::parallel_for(0, n_rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t start = 0; start < n_cols; start += kSuperBlock) {
        fit_q6_k_super_block(w + row * n_cols + start, qw ? qw + start : nullptr,
                             scale_out + row * n_groups + start / 16);
      }
    }
  });
  const at::Tensor scale_t = scales.t().contiguous();
  return {scale_t, at::full_like(scale_t, 32.0f), at::Tensor()};
}

bool split_unsigned_scales(const float* products, int n, float& d, uint8_t* sc) {
  float top = 0;
  for (int idx = 0; idx < n; ++idx) {
    if (!(products[idx] >= 0) || !std::isfinite(products[idx])) return false;
    top = std::max(top, products[idx]);
  }
  if (top == 0) {
    d = 0;
    std::fill(sc, sc + n, uint8_t{0});
    return true;
  }
  // Largest top sub-scale first: ggml's _ref split has 63 there, so it is
  // found at once; any split found reproduces every product exactly.
  for (int top_level = 63; top_level >= 1; --top_level) {
    const float candidate = top / static_cast<float>(top_level);
    if (candidate == 0 || !is_half_exact(candidate) || candidate * top_level != top) continue;
    bool fits = true;
    for (int idx = 0; idx < n && fits; ++idx) {
      const float level = std::nearbyint(products[idx] / candidate);
      fits = level >= 0 && level <= 63 && candidate * level == products[idx];
      if (fits) sc[idx] = static_cast<uint8_t>(level);
    }
    if (fits) {
      d = candidate;
      return true;
    }
  }
  return false;
}

bool split_q6_k_scales(const float* products, float& d, int8_t* sc) {
  constexpr int kGroups = 16;
  int top = 0;
  for (int idx = 0; idx < kGroups; ++idx) {
    if (!std::isfinite(products[idx])) return false;
    if (std::fabs(products[idx]) > std::fabs(products[top])) top = idx;
  }
  if (products[top] == 0) {
    d = 0;
    std::fill(sc, sc + kGroups, int8_t{0});
    return true;
  }
  d = -products[top] / 128.0f;
  if (!is_half_exact(d)) return false;
  for (int idx = 0; idx < kGroups; ++idx) {
    const float level = std::nearbyint(products[idx] / d);
    if (level < -128 || level > 127 || d * level != products[idx]) return false;
    sc[idx] = static_cast<int8_t>(level);
  }
  return true;
}

}  // namespace gptq::gguf::detail
