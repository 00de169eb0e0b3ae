#include "block_kernel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

namespace gptq::solver::detail {
namespace {

// Rows quantized together. The tile is held column-major ([col][row]), so the
// quantization of one column and its push into each later column are
// kTileRows-wide vector operations across rows with the Hinv entry
// broadcast, instead of per-row scalar work. Written with GCC vector types
// (the auto-vectoriser turned the equivalent loops into scalar code), one
// variant per instruction set with that set's native vector width: wider
// generic vectors are split lane by lane where the set lacks them.
constexpr int64_t kTileRows = 16;
constexpr size_t kTileAlignment = 64;  // the widest vector below

template <int kWidth>
struct Vectors {
  typedef float Float __attribute__((vector_size(kWidth * sizeof(float))));
  typedef int32_t Int __attribute__((vector_size(kWidth * sizeof(int32_t))));
  static constexpr int kParts = kTileRows / kWidth;  // vectors per tile column
};

// Adding then subtracting 1.5 * 2^23 rounds a float with |x| < 2^22 to the
// nearest integer, ties to even: torch.round's (and nearbyint's) rule. A
// larger |x| rounds inexactly, but only to a value far outside [0, maxq]
// (|zero| <= maxq < 2^22), which the clamp that follows maps to 0 or maxq
// exactly as the exact rounding would.
constexpr float kRoundingShift = 12582912.0f;

// Tile columns (weights, then codes), 64-byte aligned by hand: the alignment
// of a vector type differs between instruction sets (16 under SSE2, 32 under
// AVX2), and an aligned load from under-aligned memory faults.
class TileScratch {
 public:
  explicit TileScratch(int64_t count)
      : bytes_(2 * count * kTileRows * sizeof(float)), storage_(bytes_ + kTileAlignment) {
    void* base = storage_.data();
    size_t space = storage_.size();
    base_ = static_cast<float*>(std::align(kTileAlignment, bytes_, base, space));
  }
  float* weights() const { return base_; }
  int32_t* codes(int64_t count) const { return reinterpret_cast<int32_t*>(base_ + count * kTileRows); }

 private:
  size_t bytes_;
  std::vector<unsigned char> storage_;
  float* base_ = nullptr;
};

// Rows [row0, row0 + n_valid) through every column of the block. Rows past
// n_valid are padding (grid 1/0, weights 0) and are never written back.
// Inlined into one function per instruction set (below), so the vector
// operations are lowered with that set's instructions.
template <int kWidth>
__attribute__((always_inline)) inline void process_tile_body(const BlockProblem& p, int64_t row0,
                                                             int64_t n_valid,
                                                             TileScratch& scratch) {
  using Float = typename Vectors<kWidth>::Float;
  using Int = typename Vectors<kWidth>::Int;
  constexpr int kParts = Vectors<kWidth>::kParts;
  const int64_t count = p.n_block_cols;
  float* tile_data = scratch.weights();
  int32_t* code_data = scratch.codes(count);
  Float* tile = reinterpret_cast<Float*>(tile_data);  // [count][kParts]
  Int* tile_codes = reinterpret_cast<Int*>(code_data);
  if (n_valid < kTileRows) std::fill(tile_data, tile_data + count * kTileRows, 0.0f);
  for (int64_t t = 0; t < n_valid; ++t) {
    const float* src = p.W + (row0 + t) * p.w_stride + p.col_start;
    for (int64_t col = 0; col < count; ++col) tile_data[col * kTileRows + t] = src[col];
  }

  const float maxq = static_cast<float>(p.maxq);
  Float scale[kParts] = {}, zero[kParts] = {}, loss[kParts] = {};
  int32_t loaded_group = -1;
  for (int64_t col = 0; col < count; ++col) {
    if (p.column_group[col] != loaded_group) {
      loaded_group = p.column_group[col];
      const int64_t offset = static_cast<int64_t>(loaded_group) * p.n_rows + row0;
      for (int64_t t = 0; t < kTileRows; ++t) {
        scale[t / kWidth][t % kWidth] = t < n_valid ? p.scales[offset + t] : 1.0f;
        zero[t / kWidth][t % kWidth] = t < n_valid ? p.zeros[offset + t] : 0.0f;
      }
    }
    const float* hinv_row = p.hinv_block + col * count;
    const float d = hinv_row[col];
    const float inv_d2 = 1.0f / (d * d);
    Float err[kParts];
    for (int part = 0; part < kParts; ++part) {
      const Float x = tile[col * kParts + part];
      const Float rounded = (x / scale[part] + kRoundingShift) - kRoundingShift;
      Float q = rounded + zero[part];
      q = q < 0.0f ? Float{} : q;
      q = q > maxq ? Float{} + maxq : q;
      const Float deq = scale[part] * (q - zero[part]);
      const Float diff = x - deq;
      loss[part] += diff * diff * inv_d2;
      tile_codes[col * kParts + part] = __builtin_convertvector(q, Int);
      tile[col * kParts + part] = deq;
      err[part] = diff / d;
    }
    for (int64_t next = col + 1; next < count; ++next) {
      const float h = hinv_row[next];
      for (int part = 0; part < kParts; ++part) tile[next * kParts + part] -= err[part] * h;
    }
  }

  const int64_t* out_columns = p.out_columns + p.col_start;
  for (int64_t t = 0; t < n_valid; ++t) {
    const int64_t row_offset = (row0 + t) * p.w_stride;
    float* delta = p.delta + row_offset + p.col_start;
    float* dequantized = p.dequantized + row_offset;
    uint8_t* codes = p.codes + row_offset;
    for (int64_t col = 0; col < count; ++col) {
      const float q = tile_data[col * kTileRows + t];
      delta[col] -= q;
      dequantized[out_columns[col]] = q;
      codes[out_columns[col]] = static_cast<uint8_t>(code_data[col * kTileRows + t]);
    }
    p.row_loss[row0 + t] += loss[t / kWidth][t % kWidth];
  }
}

using TileFunction = void (*)(const BlockProblem&, int64_t, int64_t, TileScratch&);

#if defined(__x86_64__)
__attribute__((target("avx512f"))) void process_tile_avx512(const BlockProblem& p, int64_t row0,
                                                            int64_t n_valid, TileScratch& s) {
  process_tile_body<16>(p, row0, n_valid, s);
}
__attribute__((target("avx2,fma"))) void process_tile_avx2(const BlockProblem& p, int64_t row0,
                                                          int64_t n_valid, TileScratch& s) {
  process_tile_body<8>(p, row0, n_valid, s);
}
#endif
void process_tile_baseline(const BlockProblem& p, int64_t row0, int64_t n_valid, TileScratch& s) {
  process_tile_body<4>(p, row0, n_valid, s);
}

// Chosen by CPU features, not CPU model: GCC's target_clones("arch=haswell")
// tests for an Intel Haswell and had sent AMD Zen CPUs to the SSE2 baseline.
TileFunction select_tile_function() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return process_tile_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return process_tile_avx2;
#endif
  return process_tile_baseline;
}

}  // namespace

void run_block_cpu(const BlockProblem& problem) {
  static const TileFunction process_tile = select_tile_function();
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
