#include "gptq/bench/solver_benchmark.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "gptq/backend/device.h"
#include "gptq/core/error.h"
#include "gptq/solver/factorization.h"
#include "gptq/solver/gptq.h"
#include "gptq/solver/hessian.h"

namespace gptq::bench {

using solver::GptqConfig;
using solver::HessianAccumulator;
using solver::reversed_cholesky;
using solver::gptq_quantize;
using solver::QuantizedWeight;
namespace {

// Waits for queued device work so a timer sees it (a no-op on CPU).
void sync(const at::Tensor& t) {
  if (!t.is_cpu()) (void)t.reshape(-1)[0].item<float>();
}

double seconds(const std::function<at::Tensor()>& step) {
  const auto start = std::chrono::steady_clock::now();
  sync(step());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

}  // namespace

SolverBenchmarkResult run_solver_benchmark(const SolverBenchmarkOptions& options) {
  GPTQ_CHECK(options.rows > 0 && options.cols > 0 && options.samples > 0,
             "benchmark sizes must be positive");
  GPTQ_CHECK(options.repeat > 0, "--repeat must be positive, got ", options.repeat);
  at::manual_seed(options.seed);
  const auto cpu = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor W = at::randn({options.rows, options.cols}, cpu).to(options.device);
  const at::Tensor column_scale = at::exp(0.5 * at::randn({options.cols}, cpu));
  const at::Tensor shared = at::randn({32, options.cols}, cpu) * 0.5;
  const at::Tensor X =
      (at::randn({options.samples, options.cols}, cpu) + at::randn({options.samples, 32}, cpu).mm(shared)) *
      column_scale;
  const at::Tensor X_device = X.to(options.device);

  GptqConfig config;
  config.quant.bits = options.bits;
  config.quant.group_size = options.group_size;
  config.desc_act = options.desc_act;

  std::vector<double> hessian_s, cholesky_s, factor_s, solve_s, inverse_s, upper_s, gemm_s;
  SolverBenchmarkResult result;
  for (int run = 0; run < options.repeat; ++run) {
    at::Tensor H;
    hessian_s.push_back(seconds([&] {
      HessianAccumulator accumulator(options.cols, options.device);
      for (int64_t start = 0; start < options.samples; start += options.batch_rows) {
        accumulator.add(X_device.narrow(0, start, std::min(options.batch_rows, options.samples - start)));
      }
      H = accumulator.hessian();
      return H;
    }));
    QuantizedWeight quantized;
    solve_s.push_back(seconds([&] {
      quantized = gptq_quantize(W, H, config);
      return quantized.dequantized;
    }));
    result.loss = quantized.loss;
    result.damp_used = quantized.damp_used;

    const at::Tensor damped =
        H + config.damp_percent * H.diagonal().mean() * at::eye(options.cols, H.options());
    factor_s.push_back(seconds([&] { return reversed_cholesky(damped); }));
    at::Tensor L, H_inverse;
    cholesky_s.push_back(seconds([&] { return L = at::linalg_cholesky(damped); }));
    inverse_s.push_back(seconds([&] { return H_inverse = at::cholesky_inverse(L); }));
    upper_s.push_back(seconds([&] { return at::linalg_cholesky(H_inverse, /*upper=*/true); }));
    gemm_s.push_back(seconds([&] { return W.mm(damped); }));
    if (options.on_run) options.on_run(run);
  }
  result.hessian_s = median(hessian_s);
  result.cholesky_s = median(cholesky_s);
  result.factor_s = median(factor_s);
  result.solve_s = median(solve_s);
  result.total_s = result.hessian_s + result.solve_s;
  result.floor_inverse_s = median(inverse_s);
  result.floor_upper_cholesky_s = median(upper_s);
  result.floor_gemm_s = median(gemm_s);
  result.floor_s = result.cholesky_s + result.floor_inverse_s + result.floor_upper_cholesky_s +
                   result.floor_gemm_s;
  result.device = options.device.str();
  result.threads = at::get_num_threads();
  result.parallel_threads = backend::parallel_for_threads();
  result.libtorch = TORCH_VERSION;
  return result;
}

}  // namespace gptq::bench
