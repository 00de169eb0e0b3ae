#include "column_order.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>

#include "gptq/core/error.h"

namespace gptq::solver::detail {
namespace {

constexpr int64_t kRowGrain = 16;

at::Tensor host_indices(const at::Tensor& perm) { return perm.to(at::kLong).contiguous(); }

}  // namespace

at::Tensor gather_solve_order(const at::Tensor& W, const at::Tensor& perm, const at::Tensor& dead) {
  GPTQ_ASSERT(W.scalar_type() == at::kFloat);
  if (!W.is_cpu()) {
    GPTQ_CHECK(at::isfinite(W).all().item<bool>(), "weight has NaN or Inf entries");
    return W.index_select(1, perm).masked_fill_(dead.index_select(0, perm).unsqueeze(0), 0.0);
  }
  const at::Tensor source = W.contiguous();
  const at::Tensor order = host_indices(perm);
  const at::Tensor dead_in_order = dead.index_select(0, perm).to(at::kBool).contiguous();
  const int64_t n_rows = source.size(0), n_cols = source.size(1);
  at::Tensor out = at::empty({n_rows, n_cols}, source.options());
  const float* src = source.data_ptr<float>();
  const int64_t* idx = order.data_ptr<int64_t>();
  const bool* is_dead = dead_in_order.data_ptr<bool>();
  float* dst = out.data_ptr<float>();
  std::atomic<bool> finite{true};
  at::parallel_for(0, n_rows, kRowGrain, [&](int64_t begin, int64_t end) {
    bool chunk_finite = true;
    for (int64_t row = begin; row < end; ++row) {
      const float* src_row = src + row * n_cols;
      float* dst_row = dst + row * n_cols;
      for (int64_t col = 0; col < n_cols; ++col) {
        const float value = src_row[idx[col]];
        chunk_finite &= std::isfinite(value);
        dst_row[col] = is_dead[col] ? 0.0f : value;
      }
    }
    if (!chunk_finite) finite = false;
  });
  GPTQ_CHECK(finite.load(), "weight has NaN or Inf entries");
  return out;
}

at::Tensor scatter_original_order(const at::Tensor& X, const at::Tensor& perm) {
  return X.index_select(1, at::argsort(perm));
}

at::Tensor permute_symmetric(const at::Tensor& H, const at::Tensor& perm) {
  if (!H.is_cpu()) return H.index_select(0, perm).index_select(1, perm);
  const at::Tensor Hc = H.contiguous();
  const at::Tensor order = host_indices(perm);
  const int64_t n = Hc.size(0);
  at::Tensor out = at::empty_like(Hc);
  const float* src = Hc.data_ptr<float>();
  const int64_t* idx = order.data_ptr<int64_t>();
  float* dst = out.data_ptr<float>();
  // Rows are gathered whole; each source row is read from cache.
  at::parallel_for(0, n, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float* src_row = src + idx[row] * n;
      float* dst_row = dst + row * n;
      for (int64_t col = 0; col < n; ++col) dst_row[col] = src_row[idx[col]];
    }
  });
  return out;
}

}  // namespace gptq::solver::detail
