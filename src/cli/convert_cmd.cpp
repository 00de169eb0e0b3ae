// gptq-quant convert: a GPTQ checkpoint re-encoded in another format.
#include <fstream>
#include <iostream>

#include "cli/command.h"
#include "gptq/convert/convert.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"

namespace gptq::cli {

namespace {

constexpr const char* kConvertFooter = R"(
Targets (--to), from a GPTQ v1 or v2 checkpoint:
  gptq                GPTQ v1 (vLLM, AutoGPTQ, transformers, GPTQModel). v1 stores
                      zero - 1, so an asymmetric zero of 0 (possible in gptq_v2) is
                      refused with the count of such groups; --allow-lossy re-encodes
                      them on the nearest v1 grid and reports the change per module.
  gptq_v2             GPTQ v2 (GPTQModel): always exact.
  compressed-tensors  pack-quantized, as llm-compressor writes it and vLLM loads it:
                      exact for 2/4/8 bits in column-order groups; 3 bits and act-order
                      g_idx are refused (exit 2, naming why).
  fp16, bf16, fp32    a dequantized model transformers loads as a plain checkpoint
                      (fp32 exact; fp16/bf16 one rounding of each weight).
  gguf                one llama.cpp file (--output FILE.gguf): 4-bit sym/asym or 8-bit
                      sym groups of 32 in column order become Q4_0 / Q4_1 / Q8_0 code
                      for code; other schemes are refused with the 'quantize --format
                      gguf' command that would work.

Every output is new (a directory; one file for gguf), written under a temporary
name and renamed when complete; an existing output is refused (exit 2). Tokenizer
and other non-weight files are copied.

Example:
  gptq-quant convert --input ./Llama-3.2-1B-gptq --to compressed-tensors \
      --output ./Llama-3.2-1B-w4a16 --report convert.json

Reference: docs/convert.md.)";

}  // namespace

Command add_convert_command(CLI::App& parent) {
  struct Options {
    convert::ConvertOptions job;
    std::string report_path;
    bool json = false;
  };
  auto options = std::make_shared<Options>();
  Command command;
  command.app = parent.add_subcommand("convert", "re-encode a GPTQ checkpoint in another checkpoint format");
  command.app->footer(kConvertFooter);
  command.app->add_option("--input", options->job.input,
                          "GPTQ checkpoint (v1 or v2): a directory or a repo id org/name[@revision] in the "
                          "local Hugging Face cache")
      ->required();
  command.app->add_option("--to", options->job.to, "target format (what each costs: below)")
      ->required()
      ->check(CLI::IsMember(convert::target_names()));
  command.app->add_option("--output", options->job.output, "output directory, or file for gguf (must not exist)")
      ->required();
  command.app->add_flag("--allow-lossy", options->job.allow_lossy,
                        "--to gptq: re-encode groups v1 cannot hold (zero 0) on the nearest v1 grid instead of "
                        "refusing; the report lists each module's change");
  command.app->add_option("--report", options->report_path,
                          "write a JSON report: what was converted, counts, bytes, lossy changes");
  command.app->add_flag("--json", options->json, "print the report as JSON on stdout");
  command.run = [options] {
    options->job.input = resolve_model_flag(options->job.input.string(), "--input");
    options->job.progress = spdlog::get_level() <= spdlog::level::info;
    if (!options->report_path.empty()) {
      std::ofstream probe(options->report_path, std::ios::app);
      GPTQ_CHECK(probe.good(), "cannot write report '", options->report_path, "'");
    }
    const nlohmann::json report = convert::run_convert(options->job);
    if (!options->report_path.empty()) {
      std::ofstream out(options->report_path, std::ios::trunc);
      out << report.dump(2) << "\n";
      GPTQ_CHECK(out.good(), "cannot write report '", options->report_path, "'");
    }
    if (options->json) std::cout << report.dump(2) << std::endl;
    return 0;
  };
  return command;
}

}  // namespace gptq::cli
