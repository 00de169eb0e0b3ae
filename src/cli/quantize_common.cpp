// Options and the run shared by `gptq-quant quantize` and `gptq-quant rtn`.
#include "cli/quantize_common.h"

#include <chrono>
#include <fstream>

#include "cli/command.h"
#include "gptq/calib/output_format.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/dist/communicator.h"
#include "gptq/rpc/credentials.h"
#include "gptq/rpc/remote_solver.h"

namespace gptq::cli {

void add_model_output_options(CLI::App& app, QuantizeCommandOptions& options) {
  auto& job = options.job;
  app.add_option("--model", job.model_dir,
                 "source model: a Hugging Face directory (config.json + safetensors) or a repo id "
                 "org/name[@revision] already in the local Hugging Face cache")
      ->required()
      ->group(kModelOutputGroup);
  app.add_option("--output", job.output_dir, "new output directory (a .gguf file with --format gguf); must not exist")
      ->required()
      ->group(kModelOutputGroup);
  app.add_option("--format", job.format,
                 "gptq (v1: vLLM, transformers, GPTQModel), gptq_v2 (GPTQModel; exact zeros) or gguf "
                 "(one llama.cpp file; type from --gguf-type)")
      ->check(CLI::IsMember(calib::output_format_names()))
      ->capture_default_str()
      ->group(kModelOutputGroup);
  app.add_option("--report", options.report_path, "write a JSON report: per-linear loss, sizes, phase timings")
      ->group(kModelOutputGroup);
  app.add_flag("--dry-run", job.dry_run, "print every linear's resolved scheme and exit; loads no weights")
      ->group(kModelOutputGroup);
  app.add_option_function<uint64_t>(
         "--max-shard-mib", [&job = options.job](uint64_t mib) { job.max_shard_bytes = mib << 20; },
         "largest output safetensors shard, MiB (0: one file; default 4096)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 30))
      ->group(kModelOutputGroup);
  options.app = &app;
}

void add_scheme_options(CLI::App& app, QuantizeCommandOptions& options) {
  auto& job = options.job;
  app.add_option("--bits", job.gptq.quant.bits, "bits per weight: 2, 3, 4 or 8 (fewer: smaller, less accurate)")
      ->capture_default_str()
      ->group(kSchemeGroup);
  app.add_option("--group-size", job.gptq.quant.group_size,
                 "columns sharing one scale/zero; 128 costs ~0.25 bit/weight over -1 (one per row), "
                 "much more accurate")
      ->capture_default_str()
      ->group(kSchemeGroup);
  app.add_flag("--sym,!--asym", job.gptq.quant.sym,
               "symmetric grid (default; what vLLM loads) or asymmetric min-max (a little more accurate)")
      ->group(kSchemeGroup);
  app.add_option("--gguf-type", job.gguf_type,
                 "--format gguf: q4_0, q4_1, q8_0, q4_k, q5_k, q6_k, q4_k_m or q5_k_m (llama-quantize's "
                 "types; replace --bits/--group-size/--sym)")
      ->capture_default_str()
      ->group(kSchemeGroup);
  app.add_option("--recipe", options.recipe_path,
                 "JSON recipe: per-module bits, groups, method (docs/recipes.md, presets in configs/); "
                 "flags given override its default")
      ->group(kSchemeGroup);
}

void add_runtime_options(CLI::App& app, QuantizeCommandOptions& options) {
  auto& job = options.job;
  app.add_option("--device", job.device, "auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps")
      ->capture_default_str()
      ->group(kRuntimeGroup);
  app.add_option("--dtype", job.dtype, "compute dtype: auto (the checkpoint's), bf16, fp16, fp32; Hessians are fp32")
      ->capture_default_str()
      ->group(kRuntimeGroup);
  app.add_flag("--resume", job.resume,
               "continue a stopped or killed run from its last finished block (same command; "
               "byte-identical output)")
      ->group(kRuntimeGroup);
  app.add_option("--work-dir", job.work_dir,
                 "where finished blocks wait for the output (default <output>.partial; removed at the end)")
      ->group(kRuntimeGroup);
}

void add_distribution_options(CLI::App& app, QuantizeCommandOptions& options) {
  app.add_option_function<double>(
         "--dist-timeout",
         [&job = options.job](double seconds) {
           job.dist_timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
         },
         "seconds a collective or the rendezvous waits for the other ranks before the run fails "
         "(default 1800)")
      ->check(CLI::PositiveNumber)
      ->group(kDistributionGroup);
}

void add_remote_worker_options(CLI::App& app, QuantizeCommandOptions& options) {
  app.add_option("--workers", options.workers,
                 "HOST:PORT,...: solve layers on these workers (round-robin; a failed job is re-queued "
                 "or solved here); same output")
      ->delimiter(',')
      ->group(kRemoteGroup);
  app.add_option("--worker-token-file", options.worker_token_file,
                 "file whose first line is the workers' bearer token (needed with --workers)")
      ->group(kRemoteGroup);
  app.add_option("--tls-ca", options.tls_ca, "PEM CA certificate: talk TLS to the workers and verify them")
      ->group(kRemoteGroup);
  app.add_option("--worker-timeout", options.worker_timeout_s, "seconds one remote solve may take before it is re-queued")
      ->capture_default_str()
      ->group(kRemoteGroup);
  app.add_option("--local-workers", options.local_workers,
                 "this process also solves, taking turns as N more workers (0: every job remote)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->group(kRemoteGroup);
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

// A GPTQ checkpoint vLLM (0.32) refuses before reading a weight is still
// written (transformers and GPTQModel load it), but never silently: said once,
// before the work starts, with what vLLM does load.
void warn_what_vllm_refuses(const calib::QuantizeOptions& job) {
  if (job.format != "gptq" && job.format != "gptq_v2") return;
  if (job.gptq.desc_act && job.gptq.quant.group_size > 0) {
    spdlog::warn("--desc-act with --group-size {}: vLLM refuses GPTQ group activation ordering (desc_act with groups), "
                 "--static-groups included; transformers and GPTQModel load it. For vLLM leave out --desc-act",
                 job.gptq.quant.group_size);
  }
  if (!job.gptq.quant.sym) {
    spdlog::warn("--asym: vLLM refuses asymmetric GPTQ (sym=false); transformers and GPTQModel load it. For vLLM "
                 "use --sym, or turn this output into compressed-tensors (gptq-quant convert --to "
                 "compressed-tensors), which vLLM loads asymmetric");
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
  options.job.model_dir = resolve_model_flag(options.job.model_dir.string(), "--model");
  if (!options.recipe_path.empty()) apply_recipe_defaults(options);
  if (reports) warn_what_vllm_refuses(options.job);
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

}  // namespace gptq::cli
