#pragma once
// A subcommand: the CLI11 app it registered and the function that runs it
// after parsing. run() returns the exit status; errors propagate as
// gptq::Error to main(), which alone catches and exits.
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace gptq::cli {

// --help sections, in the order a subcommand lists them: what to read and
// write first, the numbers that decide quality and size, then the knobs for
// bigger machines and several of them.
inline constexpr const char* kModelOutputGroup = "Model and output";
inline constexpr const char* kSchemeGroup = "Scheme";
inline constexpr const char* kCalibrationGroup = "Calibration";
inline constexpr const char* kRuntimeGroup = "Runtime and memory";
inline constexpr const char* kDistributionGroup = "Distribution (data-parallel under torchrun/srun/mpirun)";
inline constexpr const char* kRemoteGroup = "Remote workers ('gptq-quant server' solve workers)";
inline constexpr const char* kSecurityGroup = "Security";

// The directory a model flag names: a local directory, or a Hugging Face repo
// id ("org/name[@revision]") found in the local cache (io/hf_cache.h); logs
// where a repo id was found.
std::string resolve_model_flag(const std::string& spec, const std::string& flag);

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
