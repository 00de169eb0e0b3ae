// gptq-quant: turns a Hugging Face LLM checkpoint into a GPTQ checkpoint.
#include <cstdio>
#include <vector>

#include "cli/command.h"
#include "gptq/core/error.h"
#include "gptq/core/interrupt.h"
#include "gptq/core/log.h"
#include "gptq/core/memory_policy.h"
#include "gptq/core/version.h"

namespace {

constexpr const char* kDescription =
    "gptq-quant: GPTQ post-training quantization of Hugging Face LLM checkpoints.\n"
    "Reads a model directory (config.json + safetensors) or a repo id org/name from the\n"
    "local Hugging Face cache, quantizes it block by block and writes a GPTQ checkpoint\n"
    "that vLLM, transformers and GPTQModel load, or one GGUF file for llama.cpp.";

constexpr const char* kFooter =
    "\nRun 'gptq-quant <subcommand> --help' for its options; docs/<subcommand>.md has the\n"
    "reference. Exit status: 0 ok, 2 usage or input error (fix the input), 1 a failure\n"
    "on valid input: 'numerical failure: ...' (a NaN Hessian, Cholesky failing after\n"
    "every damping retry) or 'runtime failure: ...' (I/O, memory, a bug); 130 / 143\n"
    "SIGINT / SIGTERM honoured at a clean point (nothing partial left).";

}  // namespace

int main(int argc, char** argv) {
  gptq::set_memory_policy();
  CLI::App app{kDescription, "gptq-quant"};
  app.footer(kFooter);
  app.require_subcommand(1);
  app.set_version_flag("--version",
                       gptq::tool_name() + " " + gptq::tool_version() + " (libtorch " +
                           gptq::libtorch_version() + ")");
  bool quiet = false;
  bool verbose = false;
  app.add_flag("-q,--quiet", quiet, "only warnings and errors on stderr")->configurable(false);
  app.add_flag("-v,--verbose", verbose, "debug logging on stderr");

  std::vector<gptq::cli::Command> commands = {
      gptq::cli::add_quantize_command(app), gptq::cli::add_rtn_command(app),
      gptq::cli::add_benchmark_command(app), gptq::cli::add_convert_command(app),
      gptq::cli::add_server_command(app)};
  for (auto& command : commands) {
    command.app->fallthrough();
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }

  gptq::install_interrupt_handlers();
  gptq::log::setup(quiet     ? gptq::log::Verbosity::kQuiet
                   : verbose ? gptq::log::Verbosity::kVerbose
                             : gptq::log::Verbosity::kNormal);
  try {
    for (auto& command : commands) {
      if (command.app->parsed()) return command.run();
    }
  } catch (const gptq::Error& e) {
    spdlog::error("{}", e.describe());
    return e.exit_code();
  } catch (const std::exception& e) {
    // libtorch's c10::Error (out of memory, a kernel failure) carries a backtrace.
    std::string message = e.what();
    if (auto eol = message.find('\n'); eol != std::string::npos) message.resize(eol);
    spdlog::error("runtime failure: {}", message);
    return 1;
  }
  return 2;
}
