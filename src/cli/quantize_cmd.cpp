// gptq-quant quantize: GPTQ with calibration data, one forward pass per block.
#include <chrono>
#include <fstream>
#include <map>

#include "cli/command.h"
#include "cli/quantize_common.h"
#include "gptq/calib/output_format.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/dist/communicator.h"
#include "gptq/rpc/credentials.h"
#include "gptq/rpc/remote_solver.h"

namespace gptq::cli {
namespace {

constexpr const char* kQuantizeFooter = R"(
Calibration (--calib FILE): plain UTF-8 text, JSONL with a "text" field, a JSON
list of token ids or whitespace-separated ids (a stream: --nsamples windows of
--seqlen tokens start at random offsets drawn with --seed), or a JSON list of
lists (ready windows, used as-is). Text is tokenized with the model's own
tokenizer.json. The GPTQ paper uses 128 windows of 2048 tokens of C4/WikiText-2.

Cost per choice: --desc-act (act-order) usually lowers the error at no size cost;
--group-size 128 adds ~0.25 bit per weight over -1 (one group per row) and is
much more accurate; --mse searches each group's clip range (slower solves);
--no-true-sequential takes every Hessian from the unquantized block (one extra
forward per block, usually a little worse).

Output: a GPTQ v1 checkpoint (qweight/qzeros/scales/g_idx per linear, config.json
with quantization_config) that GPTQModel, vLLM and transformers load, or with
--format gptq_v2 the same tensors with exact zero points (GPTQModel); written
under a temporary name beside --output and renamed at the end. An existing
--output is refused (exit 2). After each block its results are kept durably in
<output>.partial/ (--work-dir): a run stopped by Ctrl-C, kill -9, a full disk or
a crash continues with the same command plus --resume and gives the same bytes. v1 stores zero - 1, which vLLM and AutoGPTQ
misread for an asymmetric zero of 0, so --asym runs in v1 raise such zeros to
1 (that group's step gets 1/(2^bits - 2) coarser; the report counts them).

--group-size must divide the input width of every quantized linear (vLLM
and GPTQModel need it); linears whose shape the format cannot pack at --bits
stay in full precision (listed as "dynamic" exclusions in the config).

Example:
  gptq-quant quantize --model ./Llama-3.2-1B --output ./Llama-3.2-1B-gptq \
      --calib wiki.train.raw --bits 4 --group-size 128 --desc-act --report report.json)";

}  // namespace

void add_common_quantize_options(CLI::App& app, QuantizeCommandOptions& options) {
  auto& job = options.job;
  app.add_option("--model", job.model_dir, "Hugging Face model directory (config.json + safetensors)")
      ->required();
  app.add_option("--output", job.output_dir, "output directory (must not exist)")->required();
  app.add_option("--bits", job.gptq.quant.bits, "bits per weight: 2, 3, 4 or 8")
      ->capture_default_str();
  app.add_option("--group-size", job.gptq.quant.group_size,
                 "columns sharing one scale/zero; -1 = one group per row")
      ->capture_default_str();
  app.add_flag("--sym,!--asym", job.gptq.quant.sym,
               "symmetric grid (zero at the middle; default) or asymmetric min-max");
  app.add_option("--device", job.device, "auto (cuda, then mps, then cpu), cpu, cuda[:N], mps")
      ->capture_default_str();
  app.add_option("--dtype", job.dtype,
                 "compute dtype: auto (the checkpoint's), bf16, fp16, fp32; Hessians are fp32")
      ->capture_default_str();
  app.add_option("--format", job.format,
                 "output format: gptq (GPTQ v1: vLLM, transformers, GPTQModel; asymmetric zero "
                 "points kept >= 1), gptq_v2 (GPTQModel; zeros stored exactly) or gguf (one "
                 "llama.cpp file, --output FILE.gguf, type from --gguf-type)")
      ->check(CLI::IsMember(calib::output_format_names()))
      ->capture_default_str();
  app.add_option("--gguf-type", job.gguf_type,
                 "with --format gguf: the llama.cpp file type. q4_0, q4_1, q8_0 (32-column blocks), "
                 "q4_k, q5_k, q6_k (256-column super-blocks; q4_k/q5_k are llama-quantize's _S mixes), "
                 "q4_k_m, q5_k_m (llama-quantize's _M mixes: attn_v/ffn_down of some layers in Q6_K); "
                 "GPTQ solves on the type's own grid, --bits/--group-size/--sym do not apply")
      ->capture_default_str();
  app.add_option("--workers", options.workers,
                 "HOST:PORT,...: solve every layer on these 'gptq-quant server' workers (round-robin; a "
                 "failed worker's job goes to the next one, then is solved here); output identical")
      ->delimiter(',');
  app.add_option("--worker-token-file", options.worker_token_file,
                 "file holding the workers' bearer token (its first line)");
  app.add_option("--tls-ca", options.tls_ca, "PEM CA certificate: talk TLS to the workers and verify them");
  app.add_option("--worker-timeout", options.worker_timeout_s,
                 "seconds one remote solve may take before it is re-queued")
      ->capture_default_str();
  app.add_option("--local-workers", options.local_workers,
                 "with --workers: this process also takes turns as N workers (a job whose turn is local "
                 "is solved here while fewer than N are; default 0: every job goes to the workers)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--report", options.report_path,
                 "write a JSON report: per-layer loss, damp, tokens, sizes, phase timings");
  app.add_option("--recipe", options.recipe_path,
                 "JSON recipe: a default scheme and per-module rules (docs/recipes.md, presets "
                 "in configs/); flags given here override its default");
  app.add_flag("--dry-run", job.dry_run,
               "print every linear's resolved scheme and exit without loading weights");
  app.add_option_function<uint64_t>(
         "--max-shard-mib", [&job](uint64_t mib) { job.max_shard_bytes = mib << 20; },
         "largest safetensors shard of the output, MiB (more tensors go to the next shard; one "
         "tensor larger than this gets a shard of its own; 0: one file; default 4096)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 30));
  app.add_flag("--resume", job.resume,
               "continue a stopped or killed run from its last finished block (the work directory "
               "must come from the same model, calibration and options; the output is byte-identical "
               "to an uninterrupted run's)");
  app.add_option("--work-dir", job.work_dir,
                 "where the run keeps its finished blocks until the output is written (default: "
                 "<output>.partial beside the output; removed at the end)");
  app.add_option_function<double>(
         "--dist-timeout",
         [&job](double seconds) {
           job.dist_timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
         },
         "data-parallel runs (torchrun): seconds a collective or the rendezvous may wait for the other "
         "processes before the run fails (default 1800)")
      ->check(CLI::PositiveNumber);
  options.app = &app;
}

namespace {

bool given(const CLI::App& app, const std::string& name) {
  const CLI::Option* option = app.get_option_no_throw(name);
  return option != nullptr && option->count() > 0;
}

// The recipe's default fills every scheme setting the command line left unset.
void apply_recipe_defaults(QuantizeCommandOptions& options) {
  auto& job = options.job;
  job.recipe = calib::load_recipe(options.recipe_path);
  const calib::SchemeKeys& keys = job.recipe->defaults;
  const CLI::App& app = *options.app;
  if (keys.bits && !given(app, "--bits")) job.gptq.quant.bits = *keys.bits;
  if (keys.group_size && !given(app, "--group-size")) job.gptq.quant.group_size = *keys.group_size;
  if (keys.sym && !given(app, "--sym")) job.gptq.quant.sym = *keys.sym;
  if (keys.mse && !given(app, "--mse")) job.gptq.quant.mse = *keys.mse;
  if (keys.desc_act && !given(app, "--desc-act")) job.gptq.desc_act = *keys.desc_act;
  if (keys.static_groups && !given(app, "--static-groups")) job.gptq.static_groups = *keys.static_groups;
  if (keys.damp_percent && !given(app, "--damp-percent")) job.gptq.damp_percent = *keys.damp_percent;
  if (keys.method) {
    const calib::Method method = *keys.method == "rtn" ? calib::Method::kRtn : calib::Method::kGptq;
    GPTQ_CHECK(job.method == calib::Method::kGptq || method == calib::Method::kRtn, options.recipe_path,
               ": default method 'gptq' needs calibration, which 'gptq-quant rtn' does not take; use "
               "'gptq-quant quantize --calib FILE'");
    job.default_method = method;
  }
}

// --workers: the client of the remote solve workers, or null.
std::shared_ptr<rpc::RemoteSolver> remote_solver_of(const QuantizeCommandOptions& options) {
  if (options.workers.empty()) {
    GPTQ_CHECK(options.worker_token_file.empty() && options.tls_ca.empty() && options.local_workers == 0,
               "--worker-token-file, --tls-ca and --local-workers need --workers");
    return nullptr;
  }
  GPTQ_CHECK(!options.worker_token_file.empty(), "--workers needs --worker-token-file");
  GPTQ_CHECK(options.worker_timeout_s > 0, "--worker-timeout must be positive");
  rpc::RemoteSolverOptions remote;
  remote.workers = options.workers;
  remote.token = rpc::read_token_file(options.worker_token_file, "--worker-token-file");
  if (!options.tls_ca.empty()) remote.tls_ca_pem = rpc::read_pem_file(options.tls_ca, "--tls-ca");
  remote.deadline = std::chrono::milliseconds(static_cast<int64_t>(options.worker_timeout_s * 1000));
  remote.local_workers = options.local_workers;
  spdlog::info("solving on {} worker(s) ({})", remote.workers.size(), remote.tls_ca_pem.empty() ? "plaintext" : "TLS");
  return std::make_shared<rpc::RemoteSolver>(remote);
}

nlohmann::json workers_report(const rpc::RemoteSolver& remote) {
  nlohmann::json workers = nlohmann::json::array();
  for (const auto& stats : remote.stats()) {
    workers.push_back({{"address", stats.address}, {"jobs_sent", stats.jobs_sent},
                       {"jobs_solved", stats.jobs_solved}, {"failures", stats.failures}});
    spdlog::info("worker {}: {} jobs solved, {} failed", stats.address, stats.jobs_solved, stats.failures);
  }
  spdlog::info("remote solves: {} retries, {} solved locally after a failure, {} on local turns (--local-workers)",
               remote.retries(), remote.local_solves(), remote.local_jobs());
  return {{"workers", workers},
          {"retries", remote.retries()},
          {"local_solves", remote.local_solves()},
          {"local_jobs", remote.local_jobs()}};
}

}  // namespace

int run_quantize_job(QuantizeCommandOptions& options) {
  // Launched by torchrun / srun / mpirun: one rank of a data-parallel run.
  // Every line names its rank; ranks other than 0 speak only of trouble and
  // write no report (rank 0 reports for the job).
  options.job.launch = dist::launch_from_env();
  const bool reports = !options.job.launch || options.job.launch->rank == 0;
  if (options.job.launch) {
    log::tag_lines("[rank " + std::to_string(options.job.launch->rank) + "]");
    if (!reports && spdlog::get_level() == spdlog::level::info) spdlog::set_level(spdlog::level::warn);
  }
  options.job.progress = spdlog::get_level() <= spdlog::level::info;
  if (!options.recipe_path.empty()) apply_recipe_defaults(options);
  if (!options.report_path.empty()) {
    std::ofstream probe(options.report_path, std::ios::app);
    GPTQ_CHECK(probe.good(), "cannot write report '", options.report_path, "'");
  }
  std::shared_ptr<rpc::RemoteSolver> remote = remote_solver_of(options);
  if (remote) {
    options.job.solve = [remote](const at::Tensor& W, const at::Tensor& H, const solver::GptqConfig& config,
                                 solver::SolveMethod method) { return remote->solve(W, H, config, method); };
  }
  nlohmann::json report = calib::run_quantize(options.job);
  if (remote) report["remote_solve"] = workers_report(*remote);
  if (!options.report_path.empty() && reports) {
    std::ofstream out(options.report_path, std::ios::trunc);
    out << report.dump(2) << "\n";
    GPTQ_CHECK(out.good(), "cannot write report '", options.report_path, "'");
    spdlog::info("report written to '{}'", options.report_path);
  }
  return 0;
}

Command add_quantize_command(CLI::App& parent) {
  auto options = std::make_shared<QuantizeCommandOptions>();
  auto& job = options->job;
  Command command;
  command.app = parent.add_subcommand(
      "quantize", "GPTQ-quantize a Hugging Face model directory with calibration data");
  command.app->footer(kQuantizeFooter);
  add_common_quantize_options(*command.app, *options);
  command.app->add_flag("--desc-act", job.gptq.desc_act,
                        "act-order: solve columns by descending Hessian diagonal");
  command.app->add_option("--damp-percent", job.gptq.damp_percent,
                          "Hessian damping as a fraction of its mean diagonal")
      ->capture_default_str();
  command.app->add_flag("--static-groups", job.gptq.static_groups,
                        "fix every group's grid before the solve (with --desc-act)");
  command.app->add_flag("--true-sequential,!--no-true-sequential", job.true_sequential,
                        "take each group's Hessian after the earlier groups are quantized "
                        "(default on)");
  command.app->add_flag("--mse", job.gptq.quant.mse, "grid search of each group's clip range");
  command.app->add_option("--calib", job.calib_file, "calibration file (see below)");
  command.app->add_option("--nsamples", job.n_samples, "calibration windows")
      ->capture_default_str();
  command.app->add_option("--seqlen", job.seqlen, "tokens per window")->capture_default_str();
  command.app->add_option("--seed", job.seed, "seed of the window offsets")->capture_default_str();
  command.app->add_option("--windows-per-chunk", job.block.batch_chunk,
                          "calibration windows per forward chunk (0: sized to ~256 MiB of "
                          "activations)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command.app
      ->add_option_function<int64_t>(
          "--max-held-mib",
          [options](int64_t mib) { options->job.block.max_held_bytes = mib << 20; },
          "hold the MLP activations of all windows up to this size, else recompute them per "
          "chunk (0: always recompute; default 1024)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  command.app->add_option("--offload-activations", job.offload_dir,
                          "keep the block activations of all windows (tensors of hidden size) in files "
                          "in DIR instead of RAM, streamed chunk by chunk; the output is identical (CPU)");
  command.app
      ->add_option_function<int64_t>(
          "--max-activation-mib", [options](int64_t mib) { options->job.max_activation_bytes = mib << 20; },
          "offload the block activations to the work directory by themselves when they would exceed this "
          "(default: a quarter of physical RAM; 0: never)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  command.app
      ->add_option_function<std::string>(
          "--on-solve-failure", [options](const std::string& policy) { options->job.rtn_on_solve_failure = policy == "rtn"; },
          "a GPTQ solve that fails numerically (Cholesky after every damping retry): 'error' ends the job "
          "naming the linear (default); 'rtn' rounds that linear to nearest, warns, and notes it in the report")
      ->check(CLI::IsMember({"error", "rtn"}))
      ->default_str("error");
  const std::map<std::string, model::MoeCalibration> moe_modes = {
      {"routed", model::MoeCalibration::kRouted}, {"all", model::MoeCalibration::kAll}};
  command.app
      ->add_option("--moe-calibration", job.block.moe_calibration,
                   "MoE models: which tokens feed a routed expert's Hessians: 'routed' (the "
                   "tokens the router sends it) or 'all' (every calibration token; the block "
                   "output still follows the router)")
      ->transform(CLI::CheckedTransformer(moe_modes, CLI::ignore_case))
      ->default_str("routed");
  command.app
      ->add_option("--moe-min-tokens", job.block.min_expert_tokens_per_input,
                   "MoE models, routed mode: an expert routed fewer than this many tokens per "
                   "input column gets its Hessian from all calibration tokens (with a warning)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command.run = [options] {
    options->job.method = calib::Method::kGptq;
    options->job.default_method = calib::Method::kGptq;
    return run_quantize_job(*options);
  };
  return command;
}

}  // namespace gptq::cli
