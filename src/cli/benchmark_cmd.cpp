// gptq-quant benchmark <solver|ppl>
#include "cli/command.h"
#include "gptq/core/error.h"

namespace gptq::cli {

Command add_benchmark_command(CLI::App& parent) {
  Command command;
  command.app = parent.add_subcommand("benchmark", "timings of the solver and the model");
  command.app->allow_extras();
  command.run = [] {
    throw UnsupportedError("'benchmark' is not implemented yet in this version of gptq-quant");
    return 2;
  };
  return command;
}

}  // namespace gptq::cli
