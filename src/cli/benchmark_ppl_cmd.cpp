// gptq-quant benchmark ppl: perplexity of a checkpoint (plain or GPTQ) on a
// text, the GPTQ paper's way: tokenize the whole text once, cut it into
// non-overlapping windows of --seqlen tokens, exp(mean NLL) over all windows.
// The model runs block by block: one decoder block's weights resident.
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/command.h"
#include "gptq/backend/device.h"
#include "gptq/calib/gptq_weight_source.h"
#include "gptq/tokenizer/tokenizer.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"
#include "gptq/model/config.h"
#include "gptq/model/perplexity.h"

namespace gptq::cli {
namespace {

struct PplOptions {
  std::string model;
  std::string text;
  std::string tokens;
  int64_t seqlen = 2048;
  int64_t max_windows = 0;
  std::string device = "auto";
  std::string dtype = "auto";
  bool json = false;
};

constexpr const char* kModelDataGroup = "Model and data";

void setup_ppl_options(CLI::App& app, PplOptions& options) {
  app.add_option("--model", options.model,
                 "model (plain or GPTQ): a directory or a repo id org/name[@revision] in the local Hugging "
                 "Face cache")
      ->required()
      ->group(kModelDataGroup);
  auto* text = app.add_option("--text", options.text,
                              "UTF-8 text file, tokenized whole with the model's tokenizer.json "
                              "(add_special_tokens, as transformers); WikiText-2: wiki.test.raw")
                   ->group(kModelDataGroup);
  auto* tokens = app.add_option("--tokens", options.tokens,
                                "pre-tokenized ids instead of --text: a JSON list, or whitespace-"
                                "separated integers (rows are concatenated)")
                     ->group(kModelDataGroup);
  text->excludes(tokens);
  app.add_option("--seqlen", options.seqlen, "tokens per window (windows do not overlap)")
      ->capture_default_str()
      ->group(kModelDataGroup);
  app.add_option("--max-windows", options.max_windows, "score only the first N windows: faster, noisier (0 = all)")
      ->capture_default_str()
      ->group(kModelDataGroup);
  app.add_flag("--json", options.json,
               "print {ppl, n_windows, seqlen, n_tokens, tokens_per_s, load_s, peak_rss_bytes, "
               "device, dtype} on stdout")
      ->group(kModelDataGroup);
  app.add_option("--device", options.device, "auto | cpu | cuda | cuda:N | mps")
      ->capture_default_str()
      ->group(kRuntimeGroup);
  app.add_option("--dtype", options.dtype,
                 "auto (the checkpoint's; float16 runs as fp32 on the CPU) | fp32 | bf16 | fp16")
      ->capture_default_str()
      ->group(kRuntimeGroup);
}

// Resident set size from /proc/self/status ("VmRSS" now, "VmHWM" peak), bytes.
int64_t proc_status_bytes(const std::string& key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream fields(line.substr(key.size() + 1));
      int64_t kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

std::vector<int64_t> read_ids(const PplOptions& options) {
  if (!options.tokens.empty()) {
    std::vector<int64_t> ids;
    for (const auto& row : model::read_token_rows(options.tokens)) ids.insert(ids.end(), row.begin(), row.end());
    return ids;
  }
  GPTQ_CHECK(!options.text.empty(), "give --text FILE or --tokens FILE");
  std::ifstream in(options.text, std::ios::binary);
  GPTQ_CHECK(in.good(), "cannot read text file '", options.text, "'");
  std::stringstream text;
  text << in.rdbuf();
  auto text_tokenizer = tokenizer::Tokenizer::from_model_dir(options.model);
  std::vector<int32_t> ids32 = text_tokenizer.encode(text.str(), /*add_special_tokens=*/true);
  return std::vector<int64_t>(ids32.begin(), ids32.end());
}

int run_benchmark_ppl(PplOptions options) {
  options.model = resolve_model_flag(options.model, "--model");
  const int64_t baseline_rss = proc_status_bytes("VmRSS");
  auto load_start = std::chrono::steady_clock::now();
  model::ModelConfig config = model::load_model_config(options.model);
  auto source = calib::open_weight_source(options.model);
  std::vector<int64_t> ids = read_ids(options);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  model::PerplexityOptions ppl_options;
  ppl_options.seqlen = options.seqlen;
  ppl_options.max_windows = options.max_windows;
  const backend::ComputeContext context =
      backend::resolve_compute(options.device, options.dtype, config.torch_dtype);
  ppl_options.run.device = context.device;
  ppl_options.run.dtype = context.dtype;
  spdlog::info("perplexity of {} ({}, {} layers) on {} tokens, seqlen {}, {} {}", source->describe(),
               config.architecture, config.n_layers, ids.size(), options.seqlen,
               ppl_options.run.device.str(), model::dtype_to_hf_name(ppl_options.run.dtype));
  Progress progress("blocks", static_cast<int>(config.n_layers), spdlog::get_level() <= spdlog::level::info);
  ppl_options.run.on_block = [&](int layer, int n_layers) {
    progress.advance(config.layer_prefix(layer));
    if (!progress.redraws()) spdlog::debug("[{:3}/{:3}] block done", layer + 1, n_layers);
  };
  model::PerplexityResult result = model::compute_perplexity(config, *source, ids, ppl_options);
  progress.finish();
  const int64_t peak_rss = proc_status_bytes("VmHWM");

  if (options.json) {
    nlohmann::json report = {
        {"ppl", result.ppl},           {"mean_nll", result.mean_nll},
        {"n_windows", result.n_windows}, {"seqlen", result.seqlen},
        {"n_tokens", result.n_tokens},   {"tokens_per_s", result.tokens_per_s},
        {"compute_s", result.compute_s}, {"load_s", load_s},
        {"peak_rss_bytes", peak_rss},    {"baseline_rss_bytes", baseline_rss},
        {"device", ppl_options.run.device.str()},
        {"dtype", model::dtype_to_hf_name(ppl_options.run.dtype)}};
    std::cout << report.dump() << "\n";
  } else {
    std::cout << "ppl " << result.ppl << " over " << result.n_windows << " windows of " << result.seqlen
              << " tokens (" << result.tokens_per_s << " tokens/s, load " << load_s << " s, peak RSS "
              << human_bytes(static_cast<double>(peak_rss)) << ")\n";
  }
  return 0;
}

}  // namespace

Command add_benchmark_ppl_command(CLI::App& benchmark) {
  auto options = std::make_shared<PplOptions>();
  Command command;
  command.app = benchmark.add_subcommand(
      "ppl",
      "perplexity of a checkpoint on a text (GPTQ paper protocol: whole text tokenized once,\n"
      "non-overlapping --seqlen windows, exp of the mean NLL); runs one decoder block at a time");
  setup_ppl_options(*command.app, *options);
  command.run = [options] { return run_benchmark_ppl(*options); };
  return command;
}

}  // namespace gptq::cli
