// gptq-quant quantize: GPTQ with calibration data, one forward pass per block.
#include <map>

#include "cli/command.h"
#include "cli/quantize_common.h"

namespace gptq::cli {
namespace {

constexpr const char* kQuantizeFooter = R"(
Calibration (--calib FILE): plain UTF-8 text, JSONL with a "text" field, a JSON
list of token ids or whitespace-separated ids (a stream: --nsamples windows of
--seqlen tokens at random offsets drawn with --seed), or a JSON list of lists
(ready windows, used as-is). Text goes through the model's own tokenizer.json.
The GPTQ paper uses 128 windows of 2048 tokens of C4/WikiText-2.

What each choice costs:
  --bits 4 --group-size 128  the usual trade: ~4.25 bits/weight, small error
  --group-size -1            ~0.25 bit/weight smaller, clearly less accurate
  --desc-act                 lower error at no size cost (vLLM refuses it with groups)
  --asym                     a little lower error; vLLM refuses asymmetric GPTQ
  --mse                      slower solves, a little lower error
  --no-true-sequential       one extra forward per block, usually a little worse
  --nsamples/--seqlen        forward time grows with their product

Output: a GPTQ v1 checkpoint (vLLM, transformers, GPTQModel), gptq_v2
(GPTQModel) or one GGUF file (llama.cpp), written under a temporary name and
renamed at the end. Finished blocks are kept in <output>.partial/: a run
stopped any way continues with the same command plus --resume, same bytes.
Data-parallel: torchrun --nproc-per-node N --no-python gptq-quant quantize ...

Examples:
  gptq-quant quantize --model meta-llama/Llama-3.2-1B --output ./llama-w4g128 \
      --calib wiki.train.raw --bits 4 --group-size 128 --report report.json
  gptq-quant quantize --model ./Llama-3.2-1B --output llama.q4_k_m.gguf \
      --calib wiki.train.raw --format gguf --gguf-type q4_k_m

Reference: docs/quantize.md (every option, exit codes, report fields).)";

}  // namespace

namespace {

// The GPTQ-only scheme options, after the ones rtn shares.
void add_gptq_scheme_options(CLI::App& app, QuantizeCommandOptions& options) {
  app.add_flag("--desc-act", options.job.gptq.desc_act,
               "act-order: solve columns by descending Hessian diagonal; lower error, same size")
      ->group(kSchemeGroup);
  app.add_flag("--static-groups", options.job.gptq.static_groups,
               "with --desc-act: fix every group's grid before the solve (plain g_idx order)")
      ->group(kSchemeGroup);
  app.add_option("--damp-percent", options.job.gptq.damp_percent,
                 "Hessian damping, a fraction of its mean diagonal (raised on retries)")
      ->capture_default_str()
      ->group(kSchemeGroup);
  app.add_flag("--mse", options.job.gptq.quant.mse, "grid-search each group's clip range: slower, a little lower error")
      ->group(kSchemeGroup);
  app.add_flag("--true-sequential,!--no-true-sequential", options.job.true_sequential,
               "Hessians see the earlier stages already quantized (default); --no-: one more forward per "
               "block, usually worse")
      ->group(kSchemeGroup);
}

// What the Hessians are computed from.
void add_calibration_options(CLI::App& app, QuantizeCommandOptions& options) {
  app.add_option("--calib", options.job.calib_file, "calibration text or token ids (formats below); not needed for RTN")
      ->group(kCalibrationGroup);
  app.add_option("--nsamples", options.job.n_samples, "calibration windows (more: better Hessians, longer forwards)")
      ->capture_default_str()
      ->group(kCalibrationGroup);
  app.add_option("--seqlen", options.job.seqlen, "tokens per window")->capture_default_str()->group(kCalibrationGroup);
  app.add_option("--seed", options.job.seed, "seed of the window offsets")->capture_default_str()->group(kCalibrationGroup);
  const std::map<std::string, model::MoeCalibration> moe_modes = {
      {"routed", model::MoeCalibration::kRouted}, {"all", model::MoeCalibration::kAll}};
  app.add_option("--moe-calibration", options.job.block.moe_calibration,
                 "MoE: an expert's Hessian from the tokens routed to it (routed) or from every token (all)")
      ->transform(CLI::CheckedTransformer(moe_modes, CLI::ignore_case))
      ->default_str("routed")
      ->group(kCalibrationGroup);
  app.add_option("--moe-min-tokens", options.job.block.min_expert_tokens_per_input,
                 "MoE, routed: an expert with fewer routed tokens per input column uses all tokens (warned)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str()
      ->group(kCalibrationGroup);
}

// How the forwards use memory, and what a failing solve does.
void add_memory_options(CLI::App& app, QuantizeCommandOptions& options) {
  app.add_option("--windows-per-chunk", options.job.block.batch_chunk,
                 "windows per forward chunk (0: sized to ~256 MiB of activations)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->group(kRuntimeGroup);
  app.add_option_function<int64_t>(
         "--max-held-mib", [&job = options.job](int64_t mib) { job.block.max_held_bytes = mib << 20; },
         "hold MLP activations up to this many MiB, else recompute per chunk (0: always; default 1024)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->group(kRuntimeGroup);
  app.add_option("--offload-activations", options.job.offload_dir,
                 "DIR: keep block activations in files there instead of RAM (CPU; same output)")
      ->group(kRuntimeGroup);
  app.add_option_function<int64_t>(
         "--max-activation-mib", [&job = options.job](int64_t mib) { job.max_activation_bytes = mib << 20; },
         "offload activations to the work directory past this many MiB (default: 1/4 of RAM; 0: never)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->group(kRuntimeGroup);
  app.add_option_function<std::string>(
         "--on-solve-failure",
         [&job = options.job](const std::string& policy) { job.rtn_on_solve_failure = policy == "rtn"; },
         "a solve failing numerically: error (stop, naming the linear) or rtn (round it, warn, report)")
      ->check(CLI::IsMember({"error", "rtn"}))
      ->default_str("error")
      ->group(kRuntimeGroup);
}

}  // namespace

Command add_quantize_command(CLI::App& parent) {
  auto options = std::make_shared<QuantizeCommandOptions>();
  Command command;
  command.app = parent.add_subcommand(
      "quantize", "GPTQ-quantize a Hugging Face model (directory or cached repo id) with calibration data");
  command.app->footer(kQuantizeFooter);
  CLI::App& app = *command.app;
  // One call per --help section, in the order the sections are listed.
  add_model_output_options(app, *options);
  add_scheme_options(app, *options);
  add_gptq_scheme_options(app, *options);
  add_calibration_options(app, *options);
  add_runtime_options(app, *options);
  add_memory_options(app, *options);
  add_distribution_options(app, *options);
  add_remote_worker_options(app, *options);
  command.run = [options] {
    options->job.method = calib::Method::kGptq;
    options->job.default_method = calib::Method::kGptq;
    return run_quantize_job(*options);
  };
  return command;
}

}  // namespace gptq::cli
