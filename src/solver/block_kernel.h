#pragma once
// The inner loop of GPTQ over one block of columns (private to the solver).
//
// Rows of W are independent inside a block: each row walks the block's
// columns, quantizes the current column with its group's grid, and pushes the
// scaled error into the row's later block columns through the Hinv block.
//
// Where the results go differs by kernel:
//   CPU: codes and Q land at their original columns (out_columns maps solve
//        to original order), and delta's block columns, which hold W0, become
//        W0 - Q; W's block is left as it was read. This saves the solver a
//        pass for W0 - Q and the final un-permutation of codes and Q.
//   CUDA: Q replaces the block in W and codes are in solve order (W becomes Q
//        as the solve goes); delta, dequantized and out_columns are unused.
#include <cstdint>

namespace gptq::solver::detail {

struct BlockProblem {
  float* W = nullptr;                  // [n_rows, w_stride] row-major; block at col_start
  int64_t n_rows = 0;
  int64_t w_stride = 0;
  int64_t col_start = 0;
  int64_t n_block_cols = 0;            // count <= block size
  const float* hinv_block = nullptr;   // [count, count] row-major, upper part read
  const float* scales = nullptr;       // [n_groups, n_rows]
  const float* zeros = nullptr;        // [n_groups, n_rows], integral values
  const int32_t* column_group = nullptr;  // [count] group of each block column
  int maxq = 15;
  uint8_t* codes = nullptr;            // [n_rows, w_stride]
  float* row_loss = nullptr;           // [n_rows] += (w - q)^2 / Hinv[c, c]^2
  float* delta = nullptr;              // CPU: [n_rows, w_stride], W0 -> W0 - Q on the block
  float* dequantized = nullptr;        // CPU: [n_rows, w_stride], original order
  const int64_t* out_columns = nullptr;  // CPU: [w_stride] original column of each solve column
};

// All pointers host memory (delta, dequantized, out_columns required);
// parallel over rows.
void run_block_cpu(const BlockProblem& problem);

#ifdef GPTQ_WITH_CUDA_KERNELS
// All pointers device memory; runs on the current CUDA stream. Needs
// n_block_cols <= kCudaMaxBlockCols (the Hinv block lives in shared memory).
constexpr int64_t kCudaMaxBlockCols = 128;
void run_block_cuda(const BlockProblem& problem);
#endif

}  // namespace gptq::solver::detail
