#include "gptq/calib/quantize_pipeline.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <set>

#include "gptq/backend/device.h"
#include "gptq/calib/block_runner.h"
#include "gptq/calib/calibration.h"
#include "gptq/calib/output_format.h"
#include "gptq/calib/run_fingerprint.h"
#include "gptq/calib/work_dir.h"
#include "gptq/tokenizer/tokenizer.h"
#include "gptq/core/error.h"
#include "gptq/core/fault_point.h"
#include "gptq/core/interrupt.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"
#include "gptq/io/safetensors.h"
#include "gptq/model/activation_file.h"
#include "gptq/model/perplexity.h"
#include "gptq/pack/checkpoint_writer.h"
#include "gptq/pack/format.h"
#include "gptq/solver/solver.h"

namespace gptq::calib {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

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

std::string shape_text(const LinearResult& result) {
  return "[" + std::to_string(result.rows) + "x" + std::to_string(result.cols) + "]";
}

// Per-linear reporting: one stable log line off a TTY, the redrawn line on one.
class LinearLog {
 public:
  // `already_done` linears were finished by an earlier (resumed) attempt.
  LinearLog(int total, int already_done, const QuantizeOptions& options)
      : progress_("quantizing", total - already_done, options.progress),
        total_(total),
        width_(static_cast<int>(std::to_string(total).size())),
        done_(already_done),
        options_(options) {}

  void record(const std::string& full_name, const LinearResult& result, nlohmann::json& layers) {
    ++done_;
    layers.push_back(report_entry(full_name, result));
    if (progress_.redraws()) progress_.advance(full_name);
    char line[512];
    if (!result.quantized) {
      std::snprintf(line, sizeof line, "[%*d/%d] %s %s kept in full precision (%s)", width_,
                    done_, total_, full_name.c_str(), shape_text(result).c_str(),
                    result.skip_reason.c_str());
      emit(line, /*warning=*/true);
    } else if (result.batch.empty()) {
      std::snprintf(line, sizeof line, "[%*d/%d] %s %s bits=%d g=%d err=%.2e %.2fs", width_,
                    done_, total_, full_name.c_str(), shape_text(result).c_str(),
                    result.scheme.quant.bits, result.scheme.quant.group_size, result.loss,
                    result.solve_s);
      emit(line, false);
    } else {
      batch_.count += 1;
      batch_.loss += result.loss;
      batch_.bits = result.scheme.quant.bits;
      batch_.group_size = result.scheme.quant.group_size;
      if (batch_.count == 1) batch_.shape = shape_text(result);
      if (shape_text(result) != batch_.shape) batch_.shape = "[mixed]";
    }
    if (result.batch.empty() || result.batch_remaining > 0 || batch_.count == 0) return;
    // One line per batch of experts: "[12/48] model.layers.1.mlp.experts.0-7 gate_proj/up_proj 16x[48x64] ...".
    const std::string layer_prefix = full_name.substr(0, full_name.size() - result.name.size());
    std::snprintf(line, sizeof line, "[%*d/%d] %s%s %dx%s bits=%d g=%d err=%.2e %.2fs", width_, done_, total_,
                  layer_prefix.c_str(), result.batch.c_str(), batch_.count, batch_.shape.c_str(), batch_.bits,
                  batch_.group_size, batch_.loss, result.batch_wall_s);
    batch_ = {};
    emit(line, false);
  }
  void finish() { progress_.finish(); }

 private:
  static nlohmann::json report_entry(const std::string& full_name, const LinearResult& result) {
    nlohmann::json entry = {{"name", full_name},
                            {"shape", {result.rows, result.cols}},
                            {"quantized", result.quantized},
                            {"loss", result.loss},
                            {"damp_used", result.damp_used},
                            {"n_tokens", result.n_hessian_rows},
                            {"seconds", result.solve_s}};
    if (result.quantized) {
      entry["bits"] = result.scheme.quant.bits;
      entry["group_size"] = result.scheme.quant.group_size;
      entry["zero_points_raised"] = result.n_zero_raised;
      entry["solved_with"] = result.n_stacked;
      entry["method"] = result.n_hessian_rows > 0 ? solver::method_name(result.scheme.method) : "rtn";
      if (!result.solve_failure.empty()) entry["solve_failure"] = result.solve_failure;
      entry["desc_act"] = result.n_hessian_rows > 0 && result.scheme.act_order();
    } else {
      entry["reason"] = result.skip_reason;
    }
    if (result.routing) {
      entry["routed_tokens"] = result.routing->routed_tokens;
      entry["hessian_tokens"] = result.routing->all_tokens ? "all" : "routed";
      entry["too_few_routed"] = result.routing->too_few_routed;
    }
    return entry;
  }

  // A finished item's line: debug when quiet; on a TTY only warnings print
  // (the redrawn line shows the rest); otherwise one info line each.
  void emit(const char* line, bool warning) {
    if (!options_.progress) {
      spdlog::debug("{}", line);
    } else if (progress_.redraws()) {
      if (warning) spdlog::warn("{}", line);
    } else if (warning) {
      spdlog::warn("{}", line);
    } else {
      spdlog::info("{}", line);
    }
  }

  // The quantized linears of the expert batch logged so far (sum of losses).
  struct BatchLine {
    int count = 0;
    double loss = 0;
    int bits = 0;
    int group_size = 0;
    std::string shape;
  };
  BatchLine batch_;
  Progress progress_;
  int total_;
  int width_;
  int done_;
  const QuantizeOptions& options_;
};

at::Tensor calibration_ids(const QuantizeOptions& options, const model::ModelConfig& config,
                           nlohmann::json& report) {
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
  if (config.max_position_embeddings > 0 && options.seqlen > config.max_position_embeddings) {
    spdlog::warn("--seqlen {} exceeds the model's max_position_embeddings {}", options.seqlen,
                 config.max_position_embeddings);
  }
  report["calibration"] = {{"file", options.calib_file.string()},
                           {"format", windows.format},
                           {"n_samples", options.n_samples},
                           {"seqlen", options.seqlen},
                           {"n_stream_tokens", windows.n_stream_tokens},
                           {"n_tokens", windows.input_ids.numel()},
                           {"seed", options.seed}};
  spdlog::info("calibration: {} windows x {} tokens from '{}' ({}, {} tokens in the stream)",
               options.n_samples, options.seqlen, options.calib_file.string(), windows.format,
               windows.n_stream_tokens);
  return windows.input_ids;
}

// Every block has the same shapes, so the last block's stats speak for all.
std::string streaming_note(const model::BlockStats& stats, int64_t max_held_bytes) {
  const std::string windows = std::to_string(stats.rows_per_chunk) + " window(s)";
  const std::string size = human_bytes(double(stats.mlp_hidden_bytes)) + " for all windows";
  const std::string budget =
      max_held_bytes > 0 ? "the " + human_bytes(double(max_held_bytes)) + " budget" : "holding disabled";
  const std::string rest = "; hidden states of all windows stay resident; stages run in " +
                           std::to_string(stats.n_chunks) + " chunk(s) of " + windows;
  if (stats.sparse_mlp) {
    return "MoE expert activations recomputed per span of " + windows + "' tokens (" +
           human_bytes(double(stats.mlp_hidden_bytes)) + " routed over all windows, never held)" + rest;
  }
  if (stats.mlp_recomputed) {
    return "MLP activations recomputed per chunk of " + windows + " rather than held (" + size +
           (max_held_bytes > 0 ? ", over " : ", ") + budget + ")" + rest;
  }
  return "MLP activations held (" + size + ", within " + budget + ")" + rest;
}

// Full names of every linear of the model, in layer and group order.
std::vector<std::string> linear_modules(const model::ModelConfig& config) {
  std::vector<std::string> names;
  for (int layer = 0; layer < config.n_layers; ++layer) {
    for (const auto& linear : config.layer(layer).linear_names()) names.push_back(config.layer_prefix(layer) + linear);
  }
  return names;
}

// The output projection's module name ("lm_head").
std::string lm_head_module(const model::ModelConfig& config) {
  const std::string& tensor = config.arch.lm_head;
  return tensor.ends_with(".weight") ? tensor.substr(0, tensor.size() - 7) : tensor;
}

// Every linear's scheme, and lm_head's when it is quantized.
struct ResolvedSchemes {
  solver::SchemeResolver schemes;
  std::optional<solver::Scheme> lm_head;  // nullopt: lm_head stays as it is
  bool calibrated = false;                // some module is solved with GPTQ: calibration needed
};

// Checks one module's scheme against its [out, in] shape and the job;
// `asked_by` names who chose it (recipe rule, recipe default or flag).
void check_module_scheme(const QuantizeOptions& options, const std::string& full_name, int64_t in_features,
                         const solver::Scheme& scheme, const std::string& reason) {
  const std::string who = !reason.empty()  ? " (" + reason + ")"
                          : options.recipe ? " (" + options.recipe->source + " default)"
                                           : "";
  const int group_size = scheme.quant.group_size;
  const std::string asked_by =
      who.empty() ? "--group-size " + std::to_string(group_size) : "group_size " + std::to_string(group_size) + who;
  GPTQ_CHECK(group_size <= 0 || in_features % group_size == 0, full_name, ": ", asked_by, " does not divide its ",
             in_features, " input columns (vLLM and GPTQModel need in_features % group_size == 0); use a "
             "group size that divides every linear's input width, or -1");
  GPTQ_CHECK(!scheme.static_groups || group_size > 0, full_name, ": static_groups", who,
             " needs a positive group_size (got ", group_size, "): with one group per row there is nothing to fix");
  GPTQ_CHECK(options.method == Method::kGptq || scheme.method == Method::kRtn, full_name, ": method 'gptq'", who,
             " needs calibration data, which 'gptq-quant rtn' does not take; run 'gptq-quant quantize --calib FILE'");
}

// The scheme of every linear, decided before any work: the recipe (if any)
// per module, then linears the format cannot store stay in full precision; a
// group size that does not divide a quantized linear's input width is refused
// (vLLM sizes scales as in / group), naming the rule that asked for it.
ResolvedSchemes resolve_schemes(const QuantizeOptions& options, const model::ModelConfig& config,
                                const pack::OutputFormat& format) {
  const Method default_method = options.method == Method::kRtn ? Method::kRtn : options.default_method;
  const solver::Scheme default_scheme = solver::scheme_of(options.gptq, default_method);
  const std::string lm_head = lm_head_module(config);
  const solver::SchemeResolver asked =
      options.recipe ? resolve_recipe(*options.recipe, default_scheme, linear_modules(config), lm_head)
                     : solver::SchemeResolver(default_scheme);
  ResolvedSchemes resolved{solver::SchemeResolver(default_scheme), std::nullopt, false};
  solver::SchemeResolver& schemes = resolved.schemes;
  auto decide = [&](const std::string& full_name, const std::vector<int64_t>& shape,
                    const std::optional<solver::Scheme>& asked_scheme, const std::string& reason) -> bool {
    if (!asked_scheme) {
      schemes.add_rule(solver::SchemeResolver::exact(full_name), std::nullopt, reason);
      return false;
    }
    // The format may decide otherwise (GGUF: llama-quantize's per-tensor types).
    std::string format_why;
    const std::optional<solver::Scheme> scheme = format.module_scheme(full_name, shape, *asked_scheme, &format_why);
    if (!scheme) {
      schemes.keep_full_precision(full_name, format_why);
      return false;
    }
    if (auto why = format.cannot_store(shape[0], shape[1], *scheme)) {
      schemes.keep_full_precision(full_name, *why);
      return false;
    }
    check_module_scheme(options, full_name, shape[1], *scheme, reason);
    if (!(*scheme == default_scheme)) schemes.add_rule(solver::SchemeResolver::exact(full_name), scheme, reason);
    resolved.calibrated |= scheme->method == Method::kGptq;
    return true;
  };
  for (int layer = 0; layer < config.n_layers; ++layer) {
    for (const auto& linear : config.layer(layer).linear_names()) {
      const std::string full_name = config.layer_prefix(layer) + linear;
      const solver::SchemeResolver::Rule* rule = asked.deciding_rule(full_name);
      decide(full_name, model::linear_shape(config, layer, linear), rule ? rule->scheme : default_scheme,
             rule ? rule->reason : "");
    }
  }
  // lm_head: when a rule asked for it (the asked resolver then has its rule),
  // or when the format always stores it quantized (GGUF's output.weight).
  if (const solver::SchemeResolver::Rule* rule = asked.deciding_rule(lm_head); rule && rule->scheme) {
    if (decide(lm_head, {config.vocab_size, config.hidden_size}, rule->scheme, rule->reason)) {
      resolved.lm_head = resolved.schemes.resolve(lm_head);
    }
  } else if (format.quantizes_lm_head()) {
    if (decide(lm_head, {config.vocab_size, config.hidden_size}, default_scheme, "")) {
      resolved.lm_head = resolved.schemes.resolve(lm_head);
    }
  }
  resolved.calibrated &= options.method == Method::kGptq;
  return resolved;
}

// --dry-run: one row per linear (module, bits, group, sym, act-order, method, why).
void print_scheme_table(const model::ModelConfig& config, const ResolvedSchemes& resolved) {
  std::vector<std::string> modules = linear_modules(config);
  const std::string lm_head = lm_head_module(config);
  modules.push_back(lm_head);
  size_t width = 6;
  for (const auto& name : modules) width = std::max(width, name.size());
  std::printf("%-*s %4s %6s %5s %9s %6s %5s  %s\n", static_cast<int>(width), "module", "bits", "group", "sym",
              "act-order", "method", "grid", "decided by");
  for (const auto& name : modules) {
    const bool is_head = name == lm_head;
    const std::optional<solver::Scheme> scheme = is_head ? resolved.lm_head : resolved.schemes.resolve(name);
    const solver::SchemeResolver::Rule* rule = resolved.schemes.deciding_rule(name);
    const std::string why = rule && !rule->reason.empty() ? rule->reason
                            : is_head && !scheme          ? "not named by a recipe rule"
                                                          : "default";
    if (!scheme) {
      std::printf("%-*s %4s %6s %5s %9s %6s %5s  %s\n", static_cast<int>(width), name.c_str(), "-", "-", "-", "-",
                  "skip", "-", why.c_str());
      continue;
    }
    std::printf("%-*s %4d %6d %5s %9s %6s %5s  %s\n", static_cast<int>(width), name.c_str(), scheme->quant.bits,
                scheme->quant.group_size, scheme->quant.sym ? "yes" : "no", scheme->act_order() ? "yes" : "no",
                solver::method_name(scheme->method), scheme->grid.empty() ? "int" : scheme->grid.c_str(),
                why.c_str());
  }
  std::fflush(stdout);
}

// Every module's resolved scheme, as one hash for the run's fingerprint.
std::string schemes_digest(const model::ModelConfig& config, const ResolvedSchemes& resolved) {
  std::vector<std::string> modules = linear_modules(config);
  const std::string lm_head = lm_head_module(config);
  modules.push_back(lm_head);
  std::string text;
  for (const auto& name : modules) {
    const std::optional<solver::Scheme> scheme = name == lm_head ? resolved.lm_head : resolved.schemes.resolve(name);
    text += name;
    if (!scheme) {
      text += " skip\n";
      continue;
    }
    char line[160];
    std::snprintf(line, sizeof line, " %d %d %d %d %d %d %.17g %s", scheme->quant.bits, scheme->quant.group_size,
                  scheme->quant.sym, scheme->quant.mse, scheme->desc_act, scheme->static_groups,
                  scheme->damp_percent, solver::method_name(scheme->method));
    text += line;
    // The min-max grid adds nothing, so digests of earlier runs stay valid.
    text += scheme->grid.empty() ? "\n" : " " + scheme->grid + "\n";
  }
  return "fnv1a64:" + hex64(fnv1a64(text.data(), text.size()));
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

// A data-parallel rank's own offload directory, gone at the end (its files were unlinked at creation).
void remove_quietly(const fs::path& dir) {
  std::error_code ignored;
  fs::remove_all(dir, ignored);
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

nlohmann::json settings_json(const QuantizeOptions& options) {
  const auto& g = options.gptq;
  return {{"bits", g.quant.bits},       {"group_size", g.quant.group_size},
          {"sym", g.quant.sym},         {"mse", g.quant.mse},
          {"desc_act", g.desc_act},     {"static_groups", g.static_groups},
          {"damp_percent", g.damp_percent}, {"true_sequential", options.true_sequential},
          {"block_size", g.block_size}, {"format", options.format},
          {"gguf_type", options.format == "gguf" ? nlohmann::json(options.gguf_type) : nlohmann::json()}};
}

}  // namespace

nlohmann::json run_quantize(const QuantizeOptions& options) {
  const auto total_start = Clock::now();
  validate_options(options);
  nlohmann::json report = {{"method", solver::method_name(options.method)},
                           {"model", options.model_dir.string()},
                           {"output", options.output_dir.string()},
                           {"settings", settings_json(options)}};

  // Load: config, lazy checkpoint, output reservation; all cheap and all
  // user errors surface here before any heavy work.
  auto phase_start = Clock::now();
  const model::ModelConfig config = model::load_model_config(options.model_dir);
  model::CheckpointWeightSource source(options.model_dir);
  refuse_quantized_source(config, source.checkpoint(), options.model_dir);
  const bool gguf_output = options.format == "gguf";
  const std::unique_ptr<pack::OutputFormat> format = make_format(options, config, source.checkpoint());
  const ResolvedSchemes resolved = resolve_schemes(options, config, *format);
  const solver::SchemeResolver& schemes = resolved.schemes;
  if (options.dry_run) {
    if (!options.launch || options.launch->rank == 0) print_scheme_table(config, resolved);
    report["dry_run"] = true;
    return report;
  }
  // A recipe whose modules are all RTN needs no calibration data.
  const bool calibrated = resolved.calibrated;
  if (calibrated) validate_calibration(options);
  report["method"] = calibrated ? "gptq" : "rtn";
  const backend::ComputeContext context =
      backend::resolve_compute(options.device, options.dtype, config.torch_dtype);
  const c10::Device device = context.device;
  const c10::ScalarType dtype = context.dtype;
  report["device"] = device.str();
  report["dtype"] = model::dtype_to_hf_name(dtype);
  report["architecture"] = config.architecture;
  GPTQ_CHECK(!options.launch || !options.resume, "--resume continues a single-process run; a data-parallel run (",
             options.launch->world_size, " processes) starts from the beginning");
  // Rank 0 of a data-parallel run keeps the work directory and writes the output.
  const bool writes = !options.launch || options.launch->rank == 0;

  // The work directory: refused or resumed before any heavy work.
  const fs::path work_path = options.work_dir.empty() ? WorkDir::default_path(options.output_dir) : options.work_dir;
  std::error_code exists_error;
  const bool output_exists = fs::exists(options.output_dir, exists_error);
  GPTQ_CHECK(!output_exists || (options.resume && WorkDir::holds_state(work_path)), "output '",
             options.output_dir.string(), "' already exists; choose a new directory or remove it");
  std::unique_ptr<WorkDir> work = writes ? WorkDir::open(work_path, options.resume) : nullptr;
  spdlog::info("{}: {} with {} layers, hidden {}, computing in {} on {}", options.model_dir.string(),
               config.architecture, config.n_layers, config.hidden_size,
               model::dtype_to_hf_name(dtype), device.str());
  const double load_s = seconds_since(phase_start);

  phase_start = Clock::now();
  at::Tensor ids;
  if (calibrated) ids = calibration_ids(options, config, report);
  // A data-parallel run's work directory holds no block inputs: its
  // fingerprint differs from any single-process run's, so none resumes it.
  const std::string processes =
      options.launch ? " in " + std::to_string(options.launch->world_size) + " processes" : "";
  if (work) {
    work->bind(run_fingerprint(options, source.checkpoint(), ids,
                               model::dtype_to_hf_name(dtype) + " on " + device.str() + processes,
                               schemes_digest(config, resolved)));
  }
  if (output_exists) {
    // Killed after the output's rename, before the work directory was removed.
    GPTQ_CHECK(work->finalizing(), "output '", options.output_dir.string(), "' already exists; choose a new "
               "directory or remove it");
    spdlog::info("'{}' is already complete (its run was stopped after writing it); removing '{}'",
                 options.output_dir.string(), work->path().string());
    work->remove();
    report["resume"] = {{"work_dir", work_path.string()}, {"steps_restored", "all"}, {"already_complete", true}};
    return report;
  }
  // A GGUF file is assembled at the end (gguf/gguf_model.h); a checkpoint directory starts here.
  std::optional<pack::CheckpointWriter> writer;
  if (!gguf_output && writes) writer.emplace(options.model_dir, options.output_dir, *format, options.max_shard_bytes);

  const int n_steps = config.n_layers + (resolved.lm_head ? 1 : 0);
  const int first_step = work ? std::min(work->steps_done(), n_steps) : 0;
  nlohmann::json layers = nlohmann::json::array();
  std::set<std::string> replaced;  // full names of the ".weight" tensors written packed
  int64_t zero_points_raised = 0;
  for (int step = 0; step < first_step; ++step) {
    const StepRecord record = work->record(step);
    for (const auto& entry : record.layers) layers.push_back(entry);
    replaced.insert(record.replaced.begin(), record.replaced.end());
    zero_points_raised += record.zero_points_raised;
  }
  report["resume"] = {{"work_dir", work_path.string()}, {"steps_restored", first_step}};
  // This process's windows: all, or its contiguous share in a data-parallel run.
  std::unique_ptr<dist::Communicator> comm;
  at::Tensor local_ids = ids;
  fs::path offload_work_path = work_path;
  if (options.launch) {
    const int rank = options.launch->rank;
    const int world = options.launch->world_size;
    GPTQ_CHECK(!calibrated || ids.size(0) >= world, "--nsamples ", calibrated ? ids.size(0) : 0,
               " gives fewer calibration windows than the ", world, " processes of the data-parallel run");
    if (calibrated) {
      const dist::RowRange range = dist::rows_of_rank(ids.size(0), rank, world);
      local_ids = ids.narrow(0, range.begin, range.count);
    }
    // Activations offloaded by the other ranks go beside rank 0's work directory, never into it.
    if (!writes) offload_work_path = work_path.string() + ".rank" + std::to_string(rank);
    comm = dist::connect(*options.launch, device, options.dist_timeout);
  }
  if (first_step > 0) {
    spdlog::info("resuming from '{}': {} of {} step(s) already done", work_path.string(), first_step, n_steps);
  }
  // The input of the first step to run: the embeddings, or what the work directory kept.
  at::Tensor hidden;
  std::optional<model::RotaryCache> rope;
  const bool lm_head_needs_input = resolved.lm_head && resolved.lm_head->method == Method::kGptq;
  const fs::path offload_dir =
      calibrated ? activation_offload_dir(options, local_ids, config, dtype, device, offload_work_path) : "";
  if (calibrated && first_step < n_steps && (first_step < config.n_layers || lm_head_needs_input)) {
    hidden = first_step == 0
                 ? model::embed(config, model::load_embedding(source, config, dtype, device), local_ids.to(device))
                 : work->load_input(dtype, device);
    if (!offload_dir.empty()) hidden = model::file_backed_empty(offload_dir, hidden.sizes(), dtype).copy_(hidden);
    rope.emplace(config, options.seqlen, dtype, device);
  }
  if (!offload_dir.empty()) report["calibration"]["offload_dir"] = offload_dir.string();
  const double calibration_s = seconds_since(phase_start);

  LinearLog log(static_cast<int>(config.n_linears()) + (resolved.lm_head ? 1 : 0), static_cast<int>(layers.size()),
                options);
  PhaseTimes times;
  double write_s = 0;
  BlockQuantizeOptions block_options;
  block_options.solve = {&schemes, format.get(), options.gptq, "", options.rtn_on_solve_failure, comm.get(),
                         options.solve};
  block_options.true_sequential = options.true_sequential;
  block_options.block = options.block;
  block_options.block.offload_dir = offload_dir;
  if (comm) {
    block_options.block.sum_over_processes = [&comm](at::Tensor& counts) {
      comm->all_reduce_sum(counts, "the MoE routing counts");
    };
  }
  model::BlockStats block_stats;

  // One step's packed linears and record, made durable when the step is done.
  std::vector<std::pair<std::string, at::Tensor>> step_tensors;
  StepRecord step_record;
  auto sink_for = [&](const std::string& prefix) -> LinearSink {
    return [&, prefix](LinearResult&& result) {
      const std::string full_name = prefix + result.name;
      if (!writes) {  // every process holds the same results; rank 0 reports and packs them
        fault_point("linear-solved");
        throw_if_interrupted(full_name);
        return;
      }
      log.record(full_name, result, step_record.layers);
      fault_point("linear-solved");
      if (!result.quantized) return;
      step_record.zero_points_raised += result.n_zero_raised;
      for (auto& packed : format->pack(full_name, result.solved, result.scheme)) step_tensors.push_back(std::move(packed));
      step_record.replaced.push_back(full_name + ".weight");
      throw_if_interrupted(full_name);
    };
  };
  auto finish_step = [&](const at::Tensor& next_input) {
    const auto write_start = Clock::now();
    // A data-parallel rank holds only its windows of the next input: not kept.
    if (work) work->commit_step(step_tensors, comm ? at::Tensor() : next_input, step_record);
    for (const auto& entry : step_record.layers) layers.push_back(entry);
    replaced.insert(step_record.replaced.begin(), step_record.replaced.end());
    zero_points_raised += step_record.zero_points_raised;
    step_tensors.clear();
    step_record = StepRecord();
    write_s += seconds_since(write_start);
  };
  // After a failure the work directory stays resumable once a step is
  // durable; bad input (exit 2) keeps it too but says the input must change.
  auto fail_step = [&](const std::string& where) {
    log.finish();
    try {
      rethrow_with_context(where);
    } catch (const Error& e) {
      // Nothing to resume: no durable step, or a data-parallel run (which never resumes).
      if (!work || work->steps_done() == 0 || comm) {
        if (work) work->remove();
        if (!writes) remove_quietly(offload_work_path);
        throw;
      }
      const std::string kept = "'" + work->path().string() + "' keeps " + std::to_string(work->steps_done()) +
                               " of " + std::to_string(n_steps) + " step(s)";
      if (e.exit_code() == 2) rethrow_with_note(kept + "; fix the input, then rerun with --resume or remove it");
      rethrow_with_note(kept + "; rerun with --resume to continue");
    }
  };
  for (int layer = first_step; layer < config.n_layers; ++layer) {
    const std::string prefix = config.layer_prefix(layer);
    block_options.solve.layer_prefix = prefix;
    const LinearSink sink = sink_for(prefix);
    try {
      throw_if_interrupted("the start of " + prefix.substr(0, prefix.size() - 1));
      model::BlockWeights weights = model::load_block(source, config, layer, dtype, device);
      if (calibrated) {
        hidden = quantize_block_gptq(config, weights, hidden, *rope, block_options, sink, times,
                                     &block_stats);
        // fp16 overflow or a degenerate weight shows up here first, named by its block.
        GPTQ_CHECK_NUMERIC(all_finite(hidden), "the block's output holds NaN or Inf (in ",
                           model::dtype_to_hf_name(dtype), "; fp16 overflows easily: try --dtype bf16 or fp32)");
      } else {
        quantize_block_rtn(config, weights, block_options.solve, sink, times);
      }
      const bool input_needed = calibrated && (layer + 1 < config.n_layers || lm_head_needs_input);
      finish_step(input_needed ? hidden : at::Tensor());
    } catch (...) {
      fail_step(prefix.substr(0, prefix.size() - 1));
    }
  }
  if (resolved.lm_head && first_step < n_steps) {
    block_options.solve.layer_prefix = "";
    try {
      quantize_lm_head(config, source, hidden, *resolved.lm_head, block_options.solve, dtype, device, sink_for(""),
                       times);
      finish_step(at::Tensor());
    } catch (...) {
      fail_step(lm_head_module(config));
    }
  }
  log.finish();
  hidden = at::Tensor();
  if (calibrated && block_stats.n_chunks > 0) {
    report["calibration"]["streamed"] = block_stats.mlp_recomputed;
    report["calibration"]["note"] = streaming_note(block_stats, options.block.max_held_bytes);
    spdlog::info("calibration: {}", report["calibration"]["note"].get<std::string>());
  }

  // The output: every step's packed linears as the work directory holds them
  // (so a resumed run writes the same bytes as an uninterrupted one), then
  // everything that was not quantized, copied unchanged in its stored dtype.
  phase_start = Clock::now();
  const io::Checkpoint& checkpoint = source.checkpoint();
  const std::string resume_note =
      comm ? "a data-parallel run does not resume; rerun it"
           : "rerun with --resume to write the output from the finished steps ('" + work_path.string() + "')";
  uint64_t output_bytes = 0;
  try {
    if (gguf_output && writes) {
      work->mark_finalizing();
      output_bytes = write_gguf_output(options, config, checkpoint, *work, n_steps);
    }
    for (int step = 0; step < n_steps && writer; ++step) {
      throw_if_interrupted("the assembly of the output");
      const std::unique_ptr<io::SafetensorsFile> packed = work->step_tensors(step);
      for (const auto& tensor : packed->tensors()) writer->add(tensor.name, packed->load(tensor.name));
    }
    for (const auto& name : checkpoint.names()) {
      if (!writer) break;
      throw_if_interrupted("the copy of the unquantized tensors");
      if (!replaced.count(name)) writer->add(name, checkpoint.load(name));
    }
    pack::RunSettings settings;
    settings.desc_act = calibrated && schemes.default_scheme().act_order();
    settings.damp_percent = options.gptq.damp_percent;
    settings.true_sequential = options.true_sequential;
    settings.static_groups = options.gptq.static_groups;
    settings.method = calibrated ? "gptq" : "rtn";
    settings.lm_head = resolved.lm_head.has_value();
    settings.untie_word_embeddings =
        settings.lm_head && model::lm_head_tensor_name(source, config) != config.arch.lm_head;
    if (writer) {
      work->mark_finalizing();
      output_bytes = writer->commit(schemes, settings);
    }
  } catch (const InputError&) {
    if (comm && work) work->remove();  // a data-parallel run never resumes: nothing worth keeping
    throw;  // a source tensor that cannot be read: the input must change
  } catch (...) {
    if (comm && work) work->remove();
    rethrow_with_note(resume_note);
  }
  fault_point("output-renamed");
  if (work) work->remove();
  if (comm) {
    // Every process ends together: a rank 0 that failed to write fails them all.
    comm->barrier("the output's commit by rank 0");
    if (!writes) remove_quietly(offload_work_path);
    const dist::CommStats& stats = comm->stats();
    report["distributed"] = {{"rank", comm->rank()},
                             {"world_size", comm->world_size()},
                             {"launcher", options.launch->launcher},
                             {"backend", comm->backend_name()},
                             {"windows", calibrated ? local_ids.size(0) : 0},
                             {"collectives", stats.calls},
                             {"collective_bytes", stats.bytes},
                             {"collective_s", stats.seconds}};
    spdlog::info("data-parallel: {} processes ({}), {} collectives moved {} from this rank in {}", comm->world_size(),
                 comm->backend_name(), stats.calls, human_bytes(double(stats.bytes)), human_seconds(stats.seconds));
  }
  if (zero_points_raised > 0) {
    spdlog::info("{}: {} asymmetric group grid(s) had their zero point raised from 0 to 1 "
                 "(GPTQ v1 readers need zero >= 1; --format gptq_v2 keeps them)",
                 format->name(), zero_points_raised);
  }
  write_s += seconds_since(phase_start);

  const uint64_t input_bytes = checkpoint.total_bytes();
  const double total_s = seconds_since(total_start);
  report["layers"] = layers;
  report["format"] = format->name();
  report["zero_points_raised"] = zero_points_raised;
  report["sizes"] = {{"input_bytes", input_bytes}, {"output_bytes", output_bytes}};
  report["timings_s"] = {{"load", load_s},          {"calibration", calibration_s},
                         {"forward", times.forward_s}, {"hessian", times.hessian_s},
                         {"solve", times.solve_s},  {"write", write_s},
                         {"total", total_s}};
  spdlog::info("wrote '{}': {} -> {} ({:.2f}x smaller)", options.output_dir.string(),
               human_bytes(double(input_bytes)), human_bytes(double(output_bytes)),
               output_bytes ? double(input_bytes) / double(output_bytes) : 0.0);
  spdlog::info(
      "time: load {}, calibration {}, forward {}, hessians {}, solves {}, write {}, total {}",
      human_seconds(load_s), human_seconds(calibration_s), human_seconds(times.forward_s),
      human_seconds(times.hessian_s), human_seconds(times.solve_s), human_seconds(write_s),
      human_seconds(total_s));
  return report;
}

}  // namespace gptq::calib
