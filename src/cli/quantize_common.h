#pragma once
// Options shared by `quantize` and `rtn`: where from, where to, the grid.
#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "gptq/calib/quantize_pipeline.h"

namespace gptq::cli {

struct QuantizeCommandOptions {
  calib::QuantizeOptions job;
  std::string report_path;
  std::string recipe_path;
  CLI::App* app = nullptr;  // to tell flags given on the command line from defaults
  // Remote layer solves on `gptq-quant server` workers (rpc/remote_solver.h).
  std::vector<std::string> workers;
  std::string worker_token_file;
  std::string tls_ca;
  double worker_timeout_s = 1800;
  int local_workers = 0;
};

// --model, --output, --bits, --group-size, --sym/--asym, --device, --report,
// --recipe, --dry-run, --workers and their token/TLS/timeout.
void add_common_quantize_options(CLI::App& app, QuantizeCommandOptions& options);

// Loads --recipe (its default under the flags given on the command line),
// runs the job, writes --report if asked; returns the exit status.
int run_quantize_job(QuantizeCommandOptions& options);

}  // namespace gptq::cli
