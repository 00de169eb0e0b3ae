#include "block_kernel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace gptq::solver::detail {
namespace {

// Rows quantized together. The tile is held column-major ([col][row]), so the
// quantization of one column and its push into each later column are
// kTileRows-wide vector operations across rows (two AVX2 or one AVX-512
// register) with the Hinv entry broadcast, instead of per-row scalar work.
// The push is written with a GCC vector type: the auto-vectoriser turned the
// equivalent loop into scalar FMAs. Its alignment is lowered to a float's so
// no clone assumes more than the allocator gives (a 64-byte aligned store on
// 16-byte aligned memory faults).
constexpr int64_t kTileRows = 16;
typedef float Lanes __attribute__((vector_size(kTileRows * sizeof(float)), aligned(alignof(float))));

struct TileScratch {
  std::vector<Lanes> w;        // [count] columns of kTileRows rows
  std::vector<uint8_t> codes;  // [count][kTileRows]
  explicit TileScratch(int64_t count) : w(count), codes(count * kTileRows) {}
};

// Rows [row0, row0 + n_valid) through every column of the block. Rows past
// n_valid are padding (grid 1/0, weights 0) and are never written back.
// Cloned for AVX-512 and AVX2+FMA so the row loops vectorise where possible.
__attribute__((target_clones("avx512f", "arch=haswell", "default")))
void process_tile(const BlockProblem& p, int64_t row0, int64_t n_valid, TileScratch& scratch) {
  const int64_t count = p.n_block_cols;
  Lanes* tile = scratch.w.data();
  uint8_t* tile_codes = scratch.codes.data();
  if (n_valid < kTileRows) std::fill(scratch.w.begin(), scratch.w.end(), Lanes{});
  for (int64_t t = 0; t < n_valid; ++t) {
    const float* src = p.W + (row0 + t) * p.w_stride + p.col_start;
    for (int64_t col = 0; col < count; ++col) tile[col][t] = src[col];
  }

  const float maxq = static_cast<float>(p.maxq);
  float scale[kTileRows], zero[kTileRows];
  double loss[kTileRows] = {};
  int32_t loaded_group = -1;
  for (int64_t col = 0; col < count; ++col) {
    if (p.column_group[col] != loaded_group) {
      loaded_group = p.column_group[col];
      const int64_t offset = static_cast<int64_t>(loaded_group) * p.n_rows + row0;
      for (int64_t t = 0; t < kTileRows; ++t) {
        scale[t] = t < n_valid ? p.scales[offset + t] : 1.0f;
        zero[t] = t < n_valid ? p.zeros[offset + t] : 0.0f;
      }
    }
    const float* hinv_row = p.hinv_block + col * count;
    const float d = hinv_row[col];
    const double inv_d2 = 1.0 / (static_cast<double>(d) * d);
    float w[kTileRows], scaled_err[kTileRows];
    std::memcpy(w, &tile[col], sizeof w);
    uint8_t* q_out = tile_codes + col * kTileRows;
    for (int64_t t = 0; t < kTileRows; ++t) {
      const float x = w[t];
      const float q = std::clamp(std::nearbyint(x / scale[t]) + zero[t], 0.0f, maxq);
      const float deq = scale[t] * (q - zero[t]);
      const float diff = x - deq;
      loss[t] += static_cast<double>(diff) * diff * inv_d2;
      scaled_err[t] = diff / d;
      q_out[t] = static_cast<uint8_t>(q);
      w[t] = deq;
    }
    std::memcpy(&tile[col], w, sizeof w);
    Lanes err;
    std::memcpy(&err, scaled_err, sizeof err);
    for (int64_t next = col + 1; next < count; ++next) tile[next] -= err * hinv_row[next];
  }

  for (int64_t t = 0; t < n_valid; ++t) {
    float* dst = p.W + (row0 + t) * p.w_stride + p.col_start;
    uint8_t* codes = p.codes + (row0 + t) * p.w_stride + p.col_start;
    for (int64_t col = 0; col < count; ++col) {
      dst[col] = tile[col][t];
      codes[col] = tile_codes[col * kTileRows + t];
    }
    p.row_loss[row0 + t] += static_cast<float>(loss[t]);
  }
}

}  // namespace

void run_block_cpu(const BlockProblem& problem) {
  const int64_t n_tiles = (problem.n_rows + kTileRows - 1) / kTileRows;
  at::parallel_for(0, n_tiles, 4, [&](int64_t begin, int64_t end) {
    TileScratch scratch(problem.n_block_cols);
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t row0 = tile * kTileRows;
      process_tile(problem, row0, std::min(kTileRows, problem.n_rows - row0), scratch);
    }
  });
}

}  // namespace gptq::solver::detail
