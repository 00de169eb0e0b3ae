#include "block_kernel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace gptq::solver::detail {
namespace {

// Quantizes column col_idx of kRows rows at once, then updates their later
// block columns; the Hinv row is read once per kRows rows. Cloned for AVX2+FMA
// so the update loop vectorises on the machines that have it.
template <int kRows>
__attribute__((target_clones("arch=haswell", "default")))
void process_row_tile(const BlockProblem& p, int64_t row0) {
  const int64_t count = p.n_block_cols;
  float* w[kRows];
  float* err[kRows];
  uint8_t* codes[kRows];
  double loss[kRows];
  for (int t = 0; t < kRows; ++t) {
    w[t] = p.W + (row0 + t) * p.w_stride + p.col_start;
    err[t] = p.err + (row0 + t) * count;
    codes[t] = p.codes + (row0 + t) * p.w_stride + p.col_start;
    loss[t] = 0;
  }
  const float maxq = static_cast<float>(p.maxq);
  for (int64_t col_idx = 0; col_idx < count; ++col_idx) {
    const float* hinv_row = p.hinv_block + col_idx * count;
    const float d = hinv_row[col_idx];
    const int64_t group_offset = static_cast<int64_t>(p.column_group[col_idx]) * p.n_rows;
    float scaled_err[kRows];
    for (int t = 0; t < kRows; ++t) {
      const float scale = p.scales[group_offset + row0 + t];
      const float zero = p.zeros[group_offset + row0 + t];
      const float x = w[t][col_idx];
      const float q = std::clamp(std::nearbyint(x / scale) + zero, 0.0f, maxq);
      const float deq = scale * (q - zero);
      const float diff = x - deq;
      loss[t] += static_cast<double>(diff) * diff / (static_cast<double>(d) * d);
      scaled_err[t] = diff / d;
      err[t][col_idx] = scaled_err[t];
      codes[t][col_idx] = static_cast<uint8_t>(q);
      w[t][col_idx] = deq;
    }
    for (int t = 0; t < kRows; ++t) {
      float* __restrict row = w[t];
      const float e = scaled_err[t];
      for (int64_t next = col_idx + 1; next < count; ++next) row[next] -= e * hinv_row[next];
    }
  }
  for (int t = 0; t < kRows; ++t) p.row_loss[row0 + t] += static_cast<float>(loss[t]);
}

}  // namespace

void run_block_cpu(const BlockProblem& problem) {
  constexpr int64_t kTile = 4;
  const int64_t n_tiles = problem.n_rows / kTile;
  at::parallel_for(0, n_tiles, 8, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) process_row_tile<kTile>(problem, tile * kTile);
  });
  for (int64_t row = n_tiles * kTile; row < problem.n_rows; ++row) process_row_tile<1>(problem, row);
}

}  // namespace gptq::solver::detail
