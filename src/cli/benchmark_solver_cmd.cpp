// gptq-quant benchmark solver (placeholder until its implementation lands).
#include "cli/command.h"
#include "gptq/core/error.h"

namespace gptq::cli {

Command add_benchmark_solver_command(CLI::App& benchmark) {
  Command command;
  command.app = benchmark.add_subcommand("solver", "not implemented yet");
  command.app->allow_extras();
  command.run = [] {
    throw UnsupportedError("'benchmark solver' is not implemented yet in this version of gptq-quant");
    return 2;
  };
  return command;
}

}  // namespace gptq::cli
