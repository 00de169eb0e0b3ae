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

// The options `quantize` and `rtn` share, one function per --help section
// (command.h); a subcommand calls them in section order and adds its own
// options to a section right after that section's call.
// --model, --output, --format, --report, --dry-run, --max-shard-mib.
void add_model_output_options(CLI::App& app, QuantizeCommandOptions& options);
// --bits, --group-size, --sym/--asym, --gguf-type, --recipe.
void add_scheme_options(CLI::App& app, QuantizeCommandOptions& options);
// --device, --dtype, --resume, --work-dir.
void add_runtime_options(CLI::App& app, QuantizeCommandOptions& options);
// --dist-timeout.
void add_distribution_options(CLI::App& app, QuantizeCommandOptions& options);
// --workers, --worker-token-file, --tls-ca, --worker-timeout, --local-workers.
void add_remote_worker_options(CLI::App& app, QuantizeCommandOptions& options);

// Resolves --model (a directory or a Hugging Face repo id), loads --recipe
// (its default under the flags given on the command line), runs the job, writes --report if asked; returns the exit status.
int run_quantize_job(QuantizeCommandOptions& options);

}  // namespace gptq::cli
