// CUDA version of the GPTQ block loop (see block_kernel.h).
//
// UNTESTED ON HARDWARE: written and compiled on a machine without a GPU; the
// CPU loop (block_kernel.cpp) and the tensor-ops loop are the tested paths.
//
// One thread per row, one warp of rows per thread block. The block's Hinv
// (count x count, 64 KiB at count 128) sits in shared memory and is read by
// every row; each warp stages its rows' block columns and codes in
// shared tiles laid out [column][row] (row stride padded to dodge bank
// conflicts) so the global loads and stores are row-contiguous and coalesced.
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "block_kernel.h"

namespace gptq::solver::detail {
namespace {

constexpr int kRowsPerBlock = 32;
constexpr int kTileStride = kRowsPerBlock + 1;

struct SharedLayout {
  int64_t hinv_floats, tile_floats;
  size_t bytes() const {
    return (hinv_floats + tile_floats) * sizeof(float) + tile_floats * sizeof(uint8_t);
  }
};

__host__ __device__ inline SharedLayout shared_layout(int64_t count) {
  return {count * count, count * kTileStride};
}

__global__ void gptq_block_kernel(BlockProblem p) {
  extern __shared__ float shared[];
  const int count = static_cast<int>(p.n_block_cols);
  const SharedLayout layout = shared_layout(count);
  float* hinv = shared;
  float* w_tile = hinv + layout.hinv_floats;
  uint8_t* code_tile = reinterpret_cast<uint8_t*>(w_tile + layout.tile_floats);

  const int64_t row_base = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  const int rows_here = static_cast<int>(p.n_rows - row_base < kRowsPerBlock ? p.n_rows - row_base : kRowsPerBlock);

  auto load_tiles = [&] {
    for (int k = threadIdx.x; k < count * count; k += blockDim.x) hinv[k] = p.hinv_block[k];
    for (int k = threadIdx.x; k < rows_here * count; k += blockDim.x) {
      const int local_row = k / count, col = k % count;
      w_tile[col * kTileStride + local_row] =
          p.W[(row_base + local_row) * p.w_stride + p.col_start + col];
    }
  };
  auto store_tiles = [&] {
    for (int k = threadIdx.x; k < rows_here * count; k += blockDim.x) {
      const int local_row = k / count, col = k % count;
      const int64_t row = row_base + local_row;
      p.W[row * p.w_stride + p.col_start + col] = w_tile[col * kTileStride + local_row];
      p.codes[row * p.w_stride + p.col_start + col] = code_tile[col * kTileStride + local_row];
    }
  };
  // The sequential walk of one row over the block's columns (Algorithm 1).
  auto walk_row = [&](int local_row) {
    const int64_t row = row_base + local_row;
    const float maxq = static_cast<float>(p.maxq);
    float loss = 0;
    for (int col = 0; col < count; ++col) {
      const float d = hinv[col * count + col];
      const int64_t group_offset = static_cast<int64_t>(p.column_group[col]) * p.n_rows;
      const float scale = p.scales[group_offset + row];
      const float zero = p.zeros[group_offset + row];
      float* x_ptr = &w_tile[col * kTileStride + local_row];
      const float x = *x_ptr;
      const float q = fminf(fmaxf(nearbyintf(__fdiv_rn(x, scale)) + zero, 0.0f), maxq);
      const float deq = scale * (q - zero);
      const float diff = x - deq;
      loss += diff * diff / (d * d);
      const float scaled_err = diff / d;
      code_tile[col * kTileStride + local_row] = static_cast<uint8_t>(q);
      *x_ptr = deq;
      const float* hinv_row = hinv + col * count;
      for (int next = col + 1; next < count; ++next) {
        w_tile[next * kTileStride + local_row] -= scaled_err * hinv_row[next];
      }
    }
    p.row_loss[row] += loss;
  };

  load_tiles();
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < rows_here) walk_row(threadIdx.x);
  __syncthreads();
  store_tiles();
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("gptq block kernel: ") + what + ": " +
                             cudaGetErrorString(status));
  }
}

}  // namespace

void run_block_cuda(const BlockProblem& problem) {
  if (problem.n_block_cols > kCudaMaxBlockCols) {
    throw std::runtime_error("gptq block kernel: block wider than 128 columns");
  }
  const size_t shared_bytes = shared_layout(problem.n_block_cols).bytes();
  check_cuda(cudaFuncSetAttribute(gptq_block_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(shared_bytes)),
             "shared memory opt-in");
  const unsigned int n_blocks =
      static_cast<unsigned int>((problem.n_rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  gptq_block_kernel<<<n_blocks, kRowsPerBlock, shared_bytes, stream>>>(problem);
  check_cuda(cudaGetLastError(), "launch");
}

}  // namespace gptq::solver::detail
