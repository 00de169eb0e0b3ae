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

// Diagonal blocks of H at or below this width are computed whole; wider ones
// split in two. Each split skips its lower-left quarter, so the recursion
// computes ~53% of a full GEMM at n = 4096 while every product stays a
// square-ish GEMM that runs at full BLAS speed (tall column panels did not).
constexpr int64_t kLeafWidth = 256;

bool is_low_precision(at::ScalarType dtype) {
  return dtype == at::kHalf || dtype == at::kBFloat16;
}

// out = beta * out + alpha * lhs^T rhs, float32 accumulation for any input.
void add_product(at::Tensor out, const at::Tensor& lhs, const at::Tensor& rhs, double beta,
                 double alpha) {
  if (lhs.scalar_type() == at::kFloat) {
    out.addmm_(lhs.t(), rhs, beta, alpha);
    return;
  }
#ifdef GPTQ_HAVE_ADDMM_OUT_DTYPE
  at::addmm_out(out, out, lhs.t(), rhs, at::kFloat, beta, alpha);
#else
  // Older libtorch: upcast only these columns, never all of X.
  out.addmm_(lhs.to(at::kFloat).t(), rhs.to(at::kFloat), beta, alpha);
#endif
}

// The upper triangle (and diagonal blocks) of H[lo:hi, lo:hi] =
// beta H + alpha X[:, lo:hi]^T X[:, lo:hi].
void add_upper(at::Tensor& H, const at::Tensor& X, int64_t lo, int64_t hi, double beta,
               double alpha) {
  const int64_t width = hi - lo;
  if (width <= kLeafWidth) {
    const at::Tensor columns = X.narrow(1, lo, width);
    add_product(H.narrow(0, lo, width).narrow(1, lo, width), columns, columns, beta, alpha);
    return;
  }
  const int64_t mid = lo + width / 2;
  add_product(H.narrow(0, lo, mid - lo).narrow(1, mid, hi - mid), X.narrow(1, lo, mid - lo),
              X.narrow(1, mid, hi - mid), beta, alpha);
  add_upper(H, X, lo, mid, beta, alpha);
  add_upper(H, X, mid, hi, beta, alpha);
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
  add_upper(H_, rows, 0, n_cols_, beta, alpha);
  n_samples_ += n_new;
}

at::Tensor HessianAccumulator::hessian() const {
  // Only the upper triangle is kept up to date; rebuild the lower one from it.
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
