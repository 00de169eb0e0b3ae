#pragma once
// A subcommand: the CLI11 app it registered and the function that runs it
// after parsing. run() returns the exit status; errors propagate as
// gptq::Error to main(), which alone catches and exits.
#include <CLI/CLI.hpp>
#include <functional>

namespace gptq::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_quantize_command(CLI::App& parent);
Command add_rtn_command(CLI::App& parent);
Command add_benchmark_command(CLI::App& parent);
Command add_convert_command(CLI::App& parent);
Command add_server_command(CLI::App& parent);

// Children of `benchmark`.
Command add_benchmark_solver_command(CLI::App& benchmark);
Command add_benchmark_ppl_command(CLI::App& benchmark);

}  // namespace gptq::cli
