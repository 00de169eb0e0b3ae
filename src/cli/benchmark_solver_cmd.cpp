// gptq-quant benchmark solver: times the GPTQ solver on a seeded random layer
// against the dense-BLAS floor measured in the same process (see
// gptq/bench/solver_benchmark.h for what each figure covers).
#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "gptq/backend/device.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"
#include "gptq/bench/solver_benchmark.h"

namespace gptq::cli {
namespace {

struct SolverBenchOptions {
  int64_t size = 0;
  int64_t rows = 4096;
  int64_t cols = 4096;
  int64_t samples = 4096;
  int bits = 4;
  int group_size = 128;
  bool desc_act = false;
  std::string device = "cpu";
  int repeat = 3;
  uint64_t seed = 0;
  bool json = false;
};

void setup_solver_bench_options(CLI::App& app, SolverBenchOptions& options) {
  auto* size = app.add_option("--size", options.size, "square layer: --rows = --cols = N");
  auto* rows = app.add_option("--rows", options.rows, "output features of the layer")->capture_default_str();
  auto* cols = app.add_option("--cols", options.cols, "input features (H is cols x cols)")->capture_default_str();
  size->excludes(rows)->excludes(cols);
  app.add_option("--samples", options.samples, "calibration rows fed to the Hessian")->capture_default_str();
  app.add_option("--bits", options.bits, "2 | 3 | 4 | 8")->capture_default_str();
  app.add_option("--group-size", options.group_size, "-1 (per row) or columns per group")->capture_default_str();
  app.add_flag("--desc-act", options.desc_act, "act-order: columns by descending diag(H)");
  app.add_option("--device", options.device, "cpu | cuda | mps | auto")->capture_default_str();
  app.add_option("--repeat", options.repeat, "runs; every figure is the median")->capture_default_str();
  app.add_option("--seed", options.seed, "seed of the random layer")->capture_default_str();
  app.add_flag("--json", options.json,
               "print one JSON object on stdout: hessian_s, cholesky_s, factor_s, solve_s, total_s, "
               "floor_s and its parts, loss, device, threads, libtorch and the problem");
}

void print_table(const bench::SolverBenchmarkOptions& problem, const bench::SolverBenchmarkResult& r) {
  std::printf("solver benchmark: %lldx%lld, %lld samples, %d-bit g%d%s on %s, %d threads, libtorch %s, "
              "median of %d\n",
              static_cast<long long>(problem.rows), static_cast<long long>(problem.cols),
              static_cast<long long>(problem.samples), problem.bits, problem.group_size,
              problem.desc_act ? " act-order" : "", r.device.c_str(), r.threads, r.libtorch.c_str(),
              problem.repeat);
  std::printf("  %-34s %9.3f s\n", "hessian accumulation", r.hessian_s);
  std::printf("  %-34s %9.3f s\n", "factorisation (U of H^-1)", r.factor_s);
  std::printf("  %-34s %9.3f s\n", "gptq solve (incl. factorisation)", r.solve_s);
  std::printf("  %-34s %9.3f s\n", "total (hessian + solve)", r.total_s);
  std::printf("  floor: cholesky %.3f + inverse %.3f + upper cholesky %.3f + gemm %.3f = %.3f s\n",
              r.cholesky_s, r.floor_inverse_s, r.floor_upper_cholesky_s, r.floor_gemm_s, r.floor_s);
  std::printf("  %-34s %9.3f\n", "solve / floor", r.solve_s / r.floor_s);
  std::printf("  %-34s %9.4g (damp %.4g)\n", "layer loss", r.loss, r.damp_used);
}

int run_solver_benchmark(const SolverBenchOptions& options) {
  bench::SolverBenchmarkOptions problem;
  problem.rows = options.size > 0 ? options.size : options.rows;
  problem.cols = options.size > 0 ? options.size : options.cols;
  problem.samples = options.samples;
  problem.bits = options.bits;
  problem.group_size = options.group_size;
  problem.desc_act = options.desc_act;
  problem.device = backend::resolve_device(options.device);
  problem.repeat = options.repeat;
  problem.seed = options.seed;
  spdlog::info("benchmarking the solver on a {}x{} layer, {} samples ({} runs)", problem.rows,
               problem.cols, problem.samples, problem.repeat);
  Progress progress("runs", problem.repeat, spdlog::get_level() <= spdlog::level::info);
  problem.on_run = [&](int run) { progress.advance("run " + std::to_string(run + 1)); };
  const bench::SolverBenchmarkResult r = bench::run_solver_benchmark(problem);
  progress.finish();
  if (r.parallel_threads < r.threads) {
    spdlog::warn("this build's own parallel loops reach {} of {} threads (built without libtorch's "
                 "OpenMP?): timings are not representative",
                 r.parallel_threads, r.threads);
  }
  if (!options.json) {
    print_table(problem, r);
    return 0;
  }
  const nlohmann::json report = {
      {"rows", problem.rows}, {"cols", problem.cols}, {"samples", problem.samples},
      {"bits", problem.bits}, {"group_size", problem.group_size}, {"desc_act", problem.desc_act},
      {"repeat", problem.repeat}, {"hessian_s", r.hessian_s}, {"cholesky_s", r.cholesky_s},
      {"factor_s", r.factor_s}, {"solve_s", r.solve_s}, {"total_s", r.total_s},
      {"floor_cholesky_s", r.cholesky_s}, {"floor_inverse_s", r.floor_inverse_s},
      {"floor_upper_cholesky_s", r.floor_upper_cholesky_s}, {"floor_gemm_s", r.floor_gemm_s},
      {"floor_s", r.floor_s}, {"loss", r.loss}, {"damp_used", r.damp_used}, {"device", r.device},
      {"threads", r.threads}, {"parallel_threads", r.parallel_threads}, {"libtorch", r.libtorch}};
  std::cout << report.dump() << std::endl;
  return 0;
}

}  // namespace

Command add_benchmark_solver_command(CLI::App& benchmark) {
  Command command;
  command.app = benchmark.add_subcommand(
      "solver", "time Hessian accumulation and the GPTQ solve on a random layer vs the BLAS floor");
  auto options = std::make_shared<SolverBenchOptions>();
  setup_solver_bench_options(*command.app, *options);
  command.run = [options] { return run_solver_benchmark(*options); };
  return command;
}

}  // namespace gptq::cli
