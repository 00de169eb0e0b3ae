// gptq-quant convert: a quantized checkpoint re-encoded in another format, exactly.
#include <fstream>

#include "cli/command.h"
#include "gptq/convert/convert.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"

namespace gptq::cli {

Command add_convert_command(CLI::App& parent) {
  struct Options {
    convert::ConvertOptions job;
    std::string report_path;
  };
  auto options = std::make_shared<Options>();
  Command command;
  command.app = parent.add_subcommand("convert", "re-encode a quantized checkpoint in another format, exactly");
  command.app->footer(R"(
Targets:
  gguf     a GPTQ checkpoint of 4-bit sym/asym or 8-bit sym groups of 32 in column
           order, as one llama.cpp file (Q4_0 / Q4_1 / Q8_0, code for code; the
           other tensors as llama-quantize types them). Other schemes are refused
           with the 'quantize --format gguf' command that would work.
  gptq     GPTQ v1 from v2 (refused when an asymmetric zero point is 0: v1 cannot hold it)
  gptq_v2  GPTQ v2 from v1 (always exact)

Example:
  gptq-quant convert --input ./Llama-3.2-1B-gptq-g32 --to gguf --output llama-q4_0.gguf)");
  command.app->add_option("--input", options->job.input, "GPTQ checkpoint directory")->required();
  command.app->add_option("--to", options->job.to, "target format")
      ->required()
      ->check(CLI::IsMember(convert::target_names()));
  command.app->add_option("--output", options->job.output, "output file (gguf) or directory (must not exist)")
      ->required();
  command.app->add_option("--report", options->report_path, "write a JSON report of the conversion");
  command.run = [options] {
    const nlohmann::json report = convert::run_convert(options->job);
    if (!options->report_path.empty()) {
      std::ofstream out(options->report_path, std::ios::trunc);
      out << report.dump(2) << "\n";
      GPTQ_CHECK(out.good(), "cannot write report '", options->report_path, "'");
    }
    return 0;
  };
  return command;
}

}  // namespace gptq::cli
