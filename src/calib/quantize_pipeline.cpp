#include "gptq/calib/quantize_pipeline.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <optional>

#include "gptq/backend/device.h"
#include "gptq/calib/block_runner.h"
#include "gptq/calib/calibration.h"
#include "gptq/calib/data_parallel.h"
#include "gptq/calib/output_assembly.h"
#include "gptq/calib/output_format.h"
#include "gptq/calib/quantize_plan.h"
#include "gptq/calib/resume.h"
#include "gptq/calib/run_fingerprint.h"
#include "gptq/calib/run_report.h"
#include "gptq/core/error.h"
#include "gptq/core/fault_point.h"
#include "gptq/core/interrupt.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"
#include "gptq/model/activation_file.h"
#include "gptq/model/weights.h"
#include "gptq/solver/solver.h"
#include "gptq/tokenizer/tokenizer.h"

namespace gptq::calib {
namespace fs = std::filesystem;

namespace {

using Clock = RunTimes::Clock;

// Checks everything that can be checked before loading any tensor.
void validate_options(const QuantizeOptions& options) {
  solver::validate(options.gptq.quant);
  GPTQ_CHECK(fs::is_directory(options.model_dir), "model directory '", options.model_dir.string(),
             "' does not exist");
  GPTQ_CHECK(fs::is_regular_file(options.model_dir / "config.json"), "model directory '",
             options.model_dir.string(), "' has no config.json");
  GPTQ_CHECK(options.gptq.damp_percent > 0 && options.gptq.damp_percent < 1,
             "--damp-percent must be in (0, 1), got ", options.gptq.damp_percent);
  GPTQ_CHECK(!options.gptq.static_groups || options.gptq.quant.group_size > 0,
             "--static-groups needs a positive --group-size (got ", options.gptq.quant.group_size,
             "): with one group per row there is nothing to fix in advance");
}

// Only when some module is solved with GPTQ.
void validate_calibration(const QuantizeOptions& options) {
  GPTQ_CHECK(!options.calib_file.empty(),
             "quantize needs calibration text: pass --calib FILE (plain text, JSONL with "
             "\"text\", or token ids); 'gptq-quant rtn' needs none");
  GPTQ_CHECK(fs::is_regular_file(options.calib_file), "calibration file '",
             options.calib_file.string(), "' does not exist");
  GPTQ_CHECK(options.n_samples > 0, "--nsamples must be positive, got ", options.n_samples);
  GPTQ_CHECK(options.seqlen > 1, "--seqlen must be at least 2, got ", options.seqlen);
}

// A checkpoint that is already quantized is never quantized again.
void refuse_quantized_source(const model::ModelConfig& config, const io::Checkpoint& checkpoint,
                             const fs::path& model_dir) {
  GPTQ_CHECK(!config.quantization_method, "'", (model_dir / "config.json").string(),
             "' describes an already quantized checkpoint (quantization_config.quant_method '",
             config.quantization_method.value_or(""), "'); quantize the full-precision model");
  for (const auto& name : checkpoint.names()) {
    GPTQ_CHECK(!name.ends_with(".weight_scale_inv") && !name.ends_with(".weight_scale"), "'",
               model_dir.string(), "' holds scaled low-precision weights ('", name,
               "'); quantize the full-precision (bf16/fp16/fp32) model");
  }
}

// The calibration windows, tokenized with the model's tokenizer when the
// file is text; ready windows may set their own shape (calib/calibration.h),
// which is what the run, its RoPE cache and its fingerprint then use.
at::Tensor calibration_ids(const QuantizeOptions& options, const model::ModelConfig& config, RunReport& report) {
  std::optional<tokenizer::Tokenizer> text_tokenizer;
  EncodeFn encode = [&](std::string_view text) {
    GPTQ_CHECK(fs::is_regular_file(options.model_dir / "tokenizer.json"), "calibration file '",
               options.calib_file.string(), "' is text but '", options.model_dir.string(),
               "' has no tokenizer.json (give pre-tokenized ids instead)");
    if (!text_tokenizer) text_tokenizer.emplace(tokenizer::Tokenizer::from_model_dir(options.model_dir));
    return text_tokenizer->encode(text, /*add_special_tokens=*/false);
  };
  CalibrationWindows windows =
      load_calibration(options.calib_file, encode, options.n_samples, options.seqlen, options.seed);
  const int64_t max_id = windows.input_ids.max().item<int64_t>();
  GPTQ_CHECK(max_id < config.vocab_size, "calibration file '", options.calib_file.string(),
             "' has token id ", max_id, " outside the model's vocabulary of ", config.vocab_size);
  const int64_t seqlen = windows.input_ids.size(1);
  if (config.max_position_embeddings > 0 && seqlen > config.max_position_embeddings) {
    spdlog::warn("{} {} exceeds the model's max_position_embeddings {}",
                 windows.format == "windows" ? "the ready windows' length" : "--seqlen", seqlen,
                 config.max_position_embeddings);
  }
  report.set_calibration(options, windows);
  return windows.input_ids;
}

// Where the block-boundary activations live: --offload-activations, or the
// work directory when the four tensors of hidden size a block holds for all
// windows would exceed --max-activation-mib (default a quarter of RAM); empty: RAM.
fs::path activation_offload_dir(const QuantizeOptions& options, const at::Tensor& ids, const model::ModelConfig& config,
                                c10::ScalarType dtype, c10::Device device, const fs::path& work_dir) {
  const int64_t boundary_bytes =
      4 * ids.numel() * config.hidden_size * static_cast<int64_t>(c10::elementSize(dtype));
  int64_t limit = options.max_activation_bytes;
  if (limit < 0) limit = static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE) / 4;
  fs::path dir = options.offload_dir;
  if (dir.empty() && limit > 0 && boundary_bytes > limit) dir = work_dir;
  if (dir.empty()) return dir;
  GPTQ_CHECK(device.is_cpu(), "--offload-activations keeps activations in files for CPU runs; on ", device.str(),
             " they live in device memory");
  std::error_code ec;
  fs::create_directories(dir, ec);
  GPTQ_CHECK(fs::is_directory(dir), "--offload-activations '", dir.string(), "' is not a directory we can create");
  spdlog::info("block activations ({} for all windows) live in files under '{}'{}", human_bytes(double(boundary_bytes)),
               dir.string(), options.offload_dir.empty() ? " (over --max-activation-mib)" : "");
  return dir;
}

// isfinite over [N, T, H] a few windows at a time: its temporaries (abs, the
// mask) would otherwise be as large as the activations themselves.
bool all_finite(const at::Tensor& hidden) {
  const int64_t per_window = hidden.numel() / std::max<int64_t>(1, hidden.size(0));
  const int64_t windows = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, per_window));
  for (int64_t start = 0; start < hidden.size(0); start += windows) {
    if (!at::isfinite(hidden.narrow(0, start, std::min(windows, hidden.size(0) - start))).all().item<bool>()) {
      return false;
    }
  }
  return true;
}

// lm_head, when a recipe rule asked for it: GPTQ against the Hessian of the
// final norm's output over every calibration token (the last block's output
// is its input), or RTN. Tied embeddings are untied by the writer.
void quantize_lm_head(const model::ModelConfig& config, const model::WeightSource& source, const at::Tensor& hidden,
                      const solver::Scheme& scheme, const SolveContext& context, c10::ScalarType dtype,
                      c10::Device device, const LinearSink& sink, PhaseTimes& times) {
  const std::string name = lm_head_module(config);
  model::HeadWeights head = model::load_head(source, config, dtype, device);
  model::BlockWeights weights;
  weights.tensors[name + ".weight"] = std::move(head.lm_head);
  at::Tensor H;
  int64_t n_rows = 0;
  if (hidden.defined() && scheme.method == Method::kGptq) {
    const auto start = Clock::now();
    solver::HessianAccumulator hessian(config.hidden_size, device);
    for (int64_t window = 0; window < hidden.size(0); ++window) {
      hessian.add(model::apply_norm(config.arch.final_norm_kind, hidden[window], head.final_norm, config.rms_norm_eps));
    }
    H = hessian.hessian();
    n_rows = hessian.n_samples();
    H = reduce_hessian(H, config.hidden_size, device, n_rows, context.comm, "the Hessian of " + name);
    times.hessian_s += seconds_since(start);
  }
  quantize_group({name}, H, n_rows, context, weights, sink, times);
}

// What the first step to run starts from: the embeddings of this process's
// windows, or the input an earlier attempt kept; in files when offloaded.
struct StepInput {
  at::Tensor hidden;                        // [N, T, H]; undefined: no step needs one
  std::optional<model::RotaryCache> rope;   // for T positions
  fs::path offload_dir;                     // where block activations live in files; empty: memory
};

StepInput first_step_input(const QuantizeOptions& options, const model::ModelConfig& config,
                           const model::WeightSource& source, const QuantizePlan& plan,
                           const backend::ComputeContext& compute, const at::Tensor& local_ids, int first_step,
                           const Resume& resume, const fs::path& work_dir, RunReport& report) {
  StepInput input;
  if (plan.calibrated) {
    input.offload_dir = activation_offload_dir(options, local_ids, config, compute.dtype, compute.device, work_dir);
  }
  const fs::path& offload_dir = input.offload_dir;
  const bool needed = first_step < config.n_layers || (first_step < plan.n_steps(config) && plan.lm_head_needs_input());
  if (plan.calibrated && needed) {
    input.hidden = first_step == 0
                       ? model::embed(config, model::load_embedding(source, config, compute.dtype, compute.device),
                                      local_ids.to(compute.device))
                       : resume.load_input(compute.dtype, compute.device);
    if (!offload_dir.empty()) {
      input.hidden = model::file_backed_empty(offload_dir, input.hidden.sizes(), compute.dtype).copy_(input.hidden);
    }
    input.rope.emplace(config, local_ids.size(1), compute.dtype, compute.device);
  }
  if (!offload_dir.empty()) report.json()["calibration"]["offload_dir"] = offload_dir.string();
  return input;
}

// The run's steps, one at a time: a decoder block (forward; each group
// observed, solved and its linears sunk) or lm_head; every linear logged and
// packed into its step, and the step made durable before the next starts.
class StepRunner {
 public:
  StepRunner(const QuantizeOptions& options, const model::ModelConfig& config, const model::WeightSource& source,
             const pack::OutputFormat& format, const QuantizePlan& plan, const backend::ComputeContext& compute,
             StepInput input, DataParallel& ranks, Resume& resume, FinishedSteps& finished, RunTimes& times)
      : options_(options), config_(config), source_(source), format_(format), plan_(plan), compute_(compute),
        input_(std::move(input)), ranks_(ranks), resume_(resume), finished_(finished), times_(times),
        log_(static_cast<int>(config.n_linears()) + (plan.lm_head ? 1 : 0),
             static_cast<int>(finished.layers.size()), options) {
    block_options_.solve = {&plan.schemes, &format, options.gptq, "", options.rtn_on_solve_failure, ranks.comm(),
                            options.solve};
    block_options_.true_sequential = options.true_sequential;
    block_options_.block = options.block;
    block_options_.block.offload_dir = input_.offload_dir;
    if (dist::Communicator* comm = ranks.comm()) {
      block_options_.block.sum_over_processes = [comm](at::Tensor& counts) {
        comm->all_reduce_sum(counts, "the MoE routing counts");
      };
    }
  }

  // Step `step`: block `step`, or lm_head after the last block.
  void run(int step) {
    const bool is_head = step == config_.n_layers;
    const std::string prefix = is_head ? "" : config_.layer_prefix(step);
    const std::string where = is_head ? lm_head_module(config_) : prefix.substr(0, prefix.size() - 1);
    block_options_.solve.layer_prefix = prefix;
    try {
      if (is_head) {
        quantize_lm_head(config_, source_, input_.hidden, *plan_.lm_head, block_options_.solve, compute_.dtype,
                         compute_.device, sink_for(prefix), times_.blocks);
        commit(at::Tensor());
      } else {
        commit(run_block(step, sink_for(prefix), where));
      }
    } catch (...) {
      log_.finish();
      ranks_.discard();
      resume_.fail_step(where);
    }
  }

  // After the last step: the redrawn line ends, the activations go, and how the blocks held them is reported.
  void finish(RunReport& report) {
    log_.finish();
    input_.hidden = at::Tensor();
    if (plan_.calibrated && block_stats_.n_chunks > 0) {
      report.set_streaming(block_stats_, options_.block.max_held_bytes);
    }
  }

 private:
  // Quantizes block `layer`; returns the next step's input (undefined when none needs it).
  at::Tensor run_block(int layer, const LinearSink& sink, const std::string& where) {
    throw_if_interrupted("the start of " + where);
    model::BlockWeights weights = model::load_block(source_, config_, layer, compute_.dtype, compute_.device);
    if (!plan_.calibrated) {
      quantize_block_rtn(config_, weights, block_options_.solve, sink, times_.blocks);
      return at::Tensor();
    }
    input_.hidden = quantize_block_gptq(config_, weights, input_.hidden, *input_.rope, block_options_, sink,
                                        times_.blocks, &block_stats_);
    // fp16 overflow or a degenerate weight shows up here first, named by its block.
    GPTQ_CHECK_NUMERIC(all_finite(input_.hidden), "the block's output holds NaN or Inf (in ",
                       model::dtype_to_hf_name(compute_.dtype),
                       "; fp16 overflows easily: try --dtype bf16 or fp32)");
    const bool input_needed = layer + 1 < config_.n_layers || plan_.lm_head_needs_input();
    return input_needed ? input_.hidden : at::Tensor();
  }

  // Each solved linear: logged, packed into the step, recorded. Every process
  // holds the same results; only the one that writes reports and packs them.
  LinearSink sink_for(const std::string& prefix) {
    return [this, prefix](LinearResult&& result) {
      const std::string full_name = prefix + result.name;
      if (!ranks_.writes()) {
        fault_point("linear-solved");
        throw_if_interrupted(full_name);
        return;
      }
      log_.record(full_name, result, step_record_.layers);
      fault_point("linear-solved");
      if (!result.quantized) return;
      step_record_.zero_points_raised += result.n_zero_raised;
      for (auto& packed : format_.pack(full_name, result.solved, result.scheme)) {
        step_tensors_.push_back(std::move(packed));
      }
      step_record_.replaced.push_back(full_name + ".weight");
      throw_if_interrupted(full_name);
    };
  }

  void commit(const at::Tensor& next_input) {
    const auto start = Clock::now();
    resume_.commit_step(step_tensors_, next_input, step_record_, finished_);
    step_tensors_.clear();
    step_record_ = StepRecord();
    times_.write_s += seconds_since(start);
  }

  const QuantizeOptions& options_;
  const model::ModelConfig& config_;
  const model::WeightSource& source_;
  const pack::OutputFormat& format_;
  const QuantizePlan& plan_;
  const backend::ComputeContext& compute_;
  StepInput input_;
  DataParallel& ranks_;
  Resume& resume_;
  FinishedSteps& finished_;
  RunTimes& times_;
  LinearLog log_;
  BlockQuantizeOptions block_options_;
  model::BlockStats block_stats_;
  // The step in progress: its packed linears and record, made durable by commit().
  std::vector<std::pair<std::string, at::Tensor>> step_tensors_;
  StepRecord step_record_;
};

}  // namespace

// plan, calibrate, for each step: forward, observe, solve, sink; assemble; commit.
nlohmann::json run_quantize(const QuantizeOptions& options) {
  RunTimes times;
  validate_options(options);
  RunReport report(options);

  // Plan: config, lazy checkpoint, every module's scheme, the work directory;
  // all cheap, and every user error surfaces here before any heavy work.
  auto phase_start = Clock::now();
  const model::ModelConfig config = model::load_model_config(options.model_dir);
  model::CheckpointWeightSource source(options.model_dir);
  refuse_quantized_source(config, source.checkpoint(), options.model_dir);
  const std::unique_ptr<pack::OutputFormat> format = make_format(options, config, source.checkpoint());
  const QuantizePlan plan = plan_quantize(options, config, *format);
  if (options.dry_run) {
    if (!options.launch || options.launch->rank == 0) print_plan(config, plan);
    report.json()["dry_run"] = true;
    return report.json();
  }
  if (plan.calibrated) validate_calibration(options);  // a recipe of RTN modules only needs no data
  const backend::ComputeContext compute = backend::resolve_compute(options.device, options.dtype, config.torch_dtype);
  report.set_compute(plan.calibrated, compute.device, compute.dtype, config.architecture);
  DataParallel ranks(options);
  Resume resume(options, ranks.writes());
  const std::string compute_text = model::dtype_to_hf_name(compute.dtype) + " on " + compute.device.str();
  spdlog::info("{}: {} with {} layers, hidden {}, computing in {}", options.model_dir.string(), config.architecture,
               config.n_layers, config.hidden_size, compute_text);
  times.load_s = seconds_since(phase_start);

  // Calibrate: the windows complete the fingerprint; the steps already done are restored.
  phase_start = Clock::now();
  const at::Tensor ids = plan.calibrated ? calibration_ids(options, config, report) : at::Tensor();
  const auto fingerprint = [&] {
    return run_fingerprint(options, source.checkpoint(), ids, compute_text + ranks.fingerprint_note(),
                           plan_digest(config, plan));
  };
  if (resume.bind(fingerprint, report.json())) return report.json();
  OutputAssembly output(options, config, *format, ranks.writes());
  FinishedSteps finished;
  const int n_steps = plan.n_steps(config);
  const int first_step = resume.restore(n_steps, finished, report.json());
  const at::Tensor local_ids = ranks.join(ids, resume.path(), compute.device);
  StepInput input = first_step_input(options, config, source, plan, compute, local_ids, first_step, resume,
                                     ranks.offload_dir(), report);
  times.calibration_s = seconds_since(phase_start);

  // Each step: forward, observe, solve, sink; made durable before the next.
  StepRunner steps(options, config, source, *format, plan, compute, std::move(input), ranks, resume,
                   finished, times);
  for (int step = first_step; step < n_steps; ++step) steps.run(step);
  steps.finish(report);

  // Assemble the output from the finished steps and commit it.
  phase_start = Clock::now();
  uint64_t output_bytes = 0;
  try {
    output_bytes = output.write(source, plan, resume.work_dir(), n_steps, finished.replaced);
  } catch (...) {
    resume.fail_output();
  }
  fault_point("output-renamed");
  resume.finish();
  ranks.finish(report.json());
  times.write_s += seconds_since(phase_start);
  report.finish(options.output_dir.string(), format->name(), finished.layers, finished.zero_points_raised,
                source.checkpoint().total_bytes(), output_bytes, times);
  return report.json();
}

}  // namespace gptq::calib
