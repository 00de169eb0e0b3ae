#pragma once
// Options shared by `quantize` and `rtn`: where from, where to, the grid.
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "gptq/calib/quantize_pipeline.h"

namespace gptq::cli {

struct QuantizeCommandOptions {
  calib::QuantizeOptions job;
  std::string report_path;
};

// --model, --output, --bits, --group-size, --sym/--asym, --device, --report.
void add_common_quantize_options(CLI::App& app, QuantizeCommandOptions& options);

// Runs the job, writes --report if asked; returns the exit status.
int run_quantize_job(QuantizeCommandOptions& options);

}  // namespace gptq::cli
