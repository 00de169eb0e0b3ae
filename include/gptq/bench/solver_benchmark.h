#pragma once
// The solver benchmark: a seeded random layer (W ~ randn; X ~ randn with
// per-column scales and a shared low-rank part, so H has a realistic spread),
// timed through Hessian accumulation, factorisation and the whole GPTQ solve,
// next to the dense-BLAS floor measured in the same process: Cholesky of H,
// its inverse (cholesky_inverse), the upper Cholesky of that inverse and one
// rows x cols x cols GEMM. Every figure is the median over `repeat` runs.
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <string>

namespace gptq::bench {

struct SolverBenchmarkOptions {
  int64_t rows = 4096;
  int64_t cols = 4096;
  int64_t samples = 4096;
  int64_t batch_rows = 2048;  // rows of X per HessianAccumulator::add
  int bits = 4;
  int group_size = 128;
  bool desc_act = false;
  c10::Device device = c10::Device(c10::kCPU);
  int repeat = 1;
  uint64_t seed = 0;
  // Optional: called after each of the `repeat` runs (for a progress line); default none.
  std::function<void(int run)> on_run;
};

struct SolverBenchmarkResult {
  double hessian_s = 0;       // accumulate H over all samples
  double cholesky_s = 0;      // one Cholesky of the damped H (the floor's first term)
  double factor_s = 0;        // our one factorisation: R with R R^T = H (a reversed Cholesky; no inverse)
  double solve_s = 0;         // gptq_quantize, factorisation included
  double total_s = 0;         // hessian_s + solve_s
  double floor_inverse_s = 0;         // cholesky_inverse of the Cholesky factor
  double floor_upper_cholesky_s = 0;  // cholesky(H^-1, upper=True)
  double floor_gemm_s = 0;            // [rows, cols] x [cols, cols]
  double floor_s = 0;                 // cholesky_s + the three above
  double loss = 0;
  double damp_used = 0;
  std::string device;
  int threads = 0;
  int parallel_threads = 0;           // threads our own parallel loops reach
  std::string libtorch;
};

SolverBenchmarkResult run_solver_benchmark(const SolverBenchmarkOptions& options);

}  // namespace gptq::bench
