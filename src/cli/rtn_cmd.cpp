// gptq-quant rtn: round-to-nearest onto the GPTQ grid, no calibration; the
// same GPTQ v1 output as `quantize`.
#include "cli/command.h"
#include "cli/quantize_common.h"

namespace gptq::cli {

Command add_rtn_command(CLI::App& parent) {
  auto options = std::make_shared<QuantizeCommandOptions>();
  Command command;
  command.app = parent.add_subcommand(
      "rtn", "round-to-nearest quantization without calibration (GPTQ checkpoint format)");
  command.app->footer(
      "\nEach group's scale/zero come from its min/max; every weight is rounded to the\n"
      "nearest grid point. Seconds instead of minutes, but a clearly larger error than\n"
      "'quantize' at 4 bits and below. Output as 'gptq-quant quantize'.\n\n"
      "Example:\n"
      "  gptq-quant rtn --model meta-llama/Llama-3.2-1B --output ./llama-rtn-w8 --bits 8\n\n"
      "Reference: docs/rtn.md.");
  CLI::App& app = *command.app;
  add_model_output_options(app, *options);
  add_scheme_options(app, *options);
  add_runtime_options(app, *options);
  add_distribution_options(app, *options);
  add_remote_worker_options(app, *options);
  command.run = [options] {
    options->job.method = calib::Method::kRtn;
    return run_quantize_job(*options);
  };
  return command;
}

}  // namespace gptq::cli
