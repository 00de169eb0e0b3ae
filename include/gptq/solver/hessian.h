#pragma once
// HessianAccumulator: the GPTQ proxy Hessian H = 2/n * sum_b X_b^T X_b of a
// linear layer's inputs, accumulated batch by batch in float32.
//
// Each add(X) with m new rows updates the running mean exactly as the
// reference `add_batch` (H *= n/(n+m); H += 2/(n+m) X^T X) but never keeps X.
// Only the upper triangle is accumulated (H is halved recursively: each
// off-diagonal quarter is one GEMM, diagonal blocks of <= 256 columns are
// computed whole; about 53% of the flops of X^T X at 4096 columns);
// hessian() mirrors it into a full symmetric matrix. On CUDA, bf16/fp16 X is
// multiplied with float32 accumulation without an upcast copy (libtorch >= 2.8
// `addmm(out_dtype)`; older libtorch upcasts one block's columns at a time).
//
// Throws InputError for a tensor whose last dimension is not n_cols, a
// non-floating dtype, or a device other than the accumulator's.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace gptq::solver {

class HessianAccumulator {       // H = 2/n * sum X^T X over all rows of all batches, fp32
 public:
  HessianAccumulator(int64_t n_cols, c10::Device device);
  void add(const at::Tensor& X);  // X [..., n_cols], any float dtype; rows = numel / n_cols
  at::Tensor hessian() const;     // [n_cols, n_cols] float32, symmetric (full matrix)
  int64_t n_samples() const;
  int64_t n_cols() const { return n_cols_; }

 private:
  int64_t n_cols_;
  c10::Device device_;
  at::Tensor H_;                  // upper triangle (and diagonal blocks) valid
  int64_t n_samples_ = 0;
};

}  // namespace gptq::solver
