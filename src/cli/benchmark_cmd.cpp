// gptq-quant benchmark <solver|ppl>: each benchmark is its own file.
#include "cli/command.h"

namespace gptq::cli {

Command add_benchmark_command(CLI::App& parent) {
  Command command;
  command.app = parent.add_subcommand("benchmark", "timings of the solver and the model");
  command.app->require_subcommand(1);
  std::vector<Command> benchmarks = {add_benchmark_solver_command(*command.app),
                                     add_benchmark_ppl_command(*command.app)};
  command.run = [benchmarks] {
    for (const auto& benchmark : benchmarks) {
      if (benchmark.app->parsed()) return benchmark.run();
    }
    return 2;
  };
  return command;
}

}  // namespace gptq::cli
