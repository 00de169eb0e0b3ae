#include "gptq/solver/hessian.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/headeronly/version.h>

#include <algorithm>

#include "gptq/core/error.h"

// addmm with an out_dtype (low-precision inputs, float32 accumulation and
// output) exists from libtorch 2.8 on.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
#define GPTQ_HAVE_ADDMM_OUT_DTYPE 1
#endif

namespace gptq::solver {
namespace {

// Width of the column panels of H. Narrow panels skip more of the lower
// triangle but make thinner GEMMs; n/8 rounded to 128 keeps the skipped share
// near 44% while each GEMM stays wide enough for full BLAS speed.
int64_t panel_width(int64_t n_cols) {
  const int64_t width = (n_cols / 8 + 127) / 128 * 128;
  return std::clamp<int64_t>(width, 128, 1024);
}

bool is_low_precision(at::ScalarType dtype) {
  return dtype == at::kHalf || dtype == at::kBFloat16;
}

// H[0:j1, j0:j1] = beta * H[0:j1, j0:j1] + alpha * X[:, 0:j1]^T X[:, j0:j1]
// for every panel [j0, j1): the upper triangle of beta H + alpha X^T X.
void add_upper_panels(at::Tensor& H, const at::Tensor& X, double beta, double alpha) {
  const int64_t n = H.size(0);
  const int64_t width = panel_width(n);
  const bool mixed = X.scalar_type() != at::kFloat;
  for (int64_t j0 = 0; j0 < n; j0 += width) {
    const int64_t j1 = std::min(j0 + width, n);
    at::Tensor panel = H.narrow(0, 0, j1).narrow(1, j0, j1 - j0);
    const at::Tensor lhs = X.narrow(1, 0, j1).t();
    const at::Tensor rhs = X.narrow(1, j0, j1 - j0);
    if (!mixed) {
      panel.addmm_(lhs, rhs, beta, alpha);
      continue;
    }
#ifdef GPTQ_HAVE_ADDMM_OUT_DTYPE
    at::addmm_out(panel, panel, lhs, rhs, at::kFloat, beta, alpha);
#else
    // Older libtorch: upcast only this panel's columns, never all of X.
    panel.addmm_(X.narrow(1, 0, j1).to(at::kFloat).t(), rhs.to(at::kFloat), beta, alpha);
#endif
  }
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t n_cols, c10::Device device)
    : n_cols_(n_cols), device_(device) {
  GPTQ_CHECK(n_cols > 0, "hessian accumulator needs a positive column count, got ", n_cols);
  H_ = at::zeros({n_cols, n_cols}, at::TensorOptions().dtype(at::kFloat).device(device));
}

void HessianAccumulator::add(const at::Tensor& X) {
  GPTQ_CHECK(X.defined() && X.dim() >= 1 && X.size(-1) == n_cols_,
             "hessian input must have last dimension ", n_cols_, ", got shape ",
             X.defined() ? X.sizes() : at::IntArrayRef{});
  GPTQ_CHECK(at::isFloatingType(X.scalar_type()), "hessian input must be floating point, got ",
             X.scalar_type());
  GPTQ_CHECK(X.device() == device_, "hessian input is on ", X.device(),
             " but the accumulator is on ", device_);
  at::Tensor rows = X.reshape({-1, n_cols_});
  const int64_t n_new = rows.size(0);
  if (n_new == 0) return;
  // On CUDA low-precision inputs go straight into the GEMM (float32
  // accumulation); everywhere else one float32 copy of the batch is made.
  const bool keep_dtype = device_.is_cuda() && is_low_precision(rows.scalar_type());
  if (!keep_dtype && rows.scalar_type() != at::kFloat) rows = rows.to(at::kFloat);
  rows = rows.contiguous();
  const double total = static_cast<double>(n_samples_ + n_new);
  const double beta = static_cast<double>(n_samples_) / total;
  const double alpha = 2.0 / total;
  add_upper_panels(H_, rows, beta, alpha);
  n_samples_ += n_new;
}

at::Tensor HessianAccumulator::hessian() const {
  // Panels hold the upper triangle; rebuild the lower one from it.
  if (!H_.is_cpu()) return at::triu(H_) + at::triu(H_, 1).t();
  at::Tensor full = H_.clone();
  float* data = full.data_ptr<float>();
  const int64_t n = n_cols_;
  constexpr int64_t kTile = 64;
  // Tiles below the diagonal, one tile row per task: reads stay cache-sized.
  at::parallel_for(0, (n + kTile - 1) / kTile, 1, [&](int64_t tile_begin, int64_t tile_end) {
    for (int64_t tile_row = tile_begin; tile_row < tile_end; ++tile_row) {
      const int64_t row0 = tile_row * kTile, row1 = std::min(row0 + kTile, n);
      for (int64_t col0 = 0; col0 <= row0; col0 += kTile) {
        for (int64_t row = row0; row < row1; ++row) {
          const int64_t col1 = std::min({col0 + kTile, n, row});
          for (int64_t col = col0; col < col1; ++col) data[row * n + col] = data[col * n + row];
        }
      }
    }
  });
  return full;
}

int64_t HessianAccumulator::n_samples() const { return n_samples_; }

}  // namespace gptq::solver
