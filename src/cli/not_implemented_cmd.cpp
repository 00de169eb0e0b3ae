// Subcommands that are designed but not built yet: each says so and exits 2.
#include "cli/command.h"
#include "gptq/core/error.h"

namespace gptq::cli {
namespace {

Command planned(CLI::App& parent, const char* name, const char* description) {
  Command command;
  command.app = parent.add_subcommand(name, description);
  command.app->allow_extras();
  command.run = [name] {
    throw UnsupportedError(std::string("'") + name +
                           "' is not implemented yet in this version of gptq-quant");
    return 2;
  };
  return command;
}

}  // namespace

Command add_server_command(CLI::App& parent) {
  return planned(parent, "server", "serve quantization requests for remote clients");
}

}  // namespace gptq::cli
