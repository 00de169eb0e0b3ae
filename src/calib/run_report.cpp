#include "gptq/calib/run_report.h"

#include <cstdio>

#include "gptq/core/log.h"
#include "gptq/model/config.h"
#include "gptq/solver/solver.h"

namespace gptq::calib {
namespace {

std::string shape_text(const LinearResult& result) {
  return "[" + std::to_string(result.rows) + "x" + std::to_string(result.cols) + "]";
}

nlohmann::json report_entry(const std::string& full_name, const LinearResult& result) {
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

nlohmann::json settings_json(const QuantizeOptions& options) {
  const auto& g = options.gptq;
  return {{"bits", g.quant.bits},       {"group_size", g.quant.group_size},
          {"sym", g.quant.sym},         {"mse", g.quant.mse},
          {"desc_act", g.desc_act},     {"static_groups", g.static_groups},
          {"damp_percent", g.damp_percent}, {"true_sequential", options.true_sequential},
          {"block_size", g.block_size}, {"format", options.format},
          {"gguf_type", options.format == "gguf" ? nlohmann::json(options.gguf_type) : nlohmann::json()}};
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

}  // namespace

LinearLog::LinearLog(int total, int already_done, const QuantizeOptions& options)
    : progress_("quantizing", total - already_done, options.progress),
      total_(total),
      width_(static_cast<int>(std::to_string(total).size())),
      done_(already_done),
      options_(options) {}

void LinearLog::record(const std::string& full_name, const LinearResult& result, nlohmann::json& layers) {
  ++done_;
  layers.push_back(report_entry(full_name, result));
  if (progress_.redraws()) progress_.advance(full_name);
  char line[512];
  if (!result.quantized) {
    std::snprintf(line, sizeof line, "[%*d/%d] %s %s kept in full precision (%s)", width_, done_, total_,
                  full_name.c_str(), shape_text(result).c_str(), result.skip_reason.c_str());
    emit(line, /*warning=*/true);
  } else if (result.batch.empty()) {
    std::snprintf(line, sizeof line, "[%*d/%d] %s %s bits=%d g=%d err=%.2e %.2fs", width_, done_, total_,
                  full_name.c_str(), shape_text(result).c_str(), result.scheme.quant.bits,
                  result.scheme.quant.group_size, result.loss, result.solve_s);
    emit(line, false);
  } else {
    add_to_batch(result);
  }
  if (!result.batch.empty() && result.batch_remaining == 0) flush_batch(full_name, result);
}

void LinearLog::add_to_batch(const LinearResult& result) {
  batch_.count += 1;
  batch_.loss += result.loss;
  batch_.bits = result.scheme.quant.bits;
  batch_.group_size = result.scheme.quant.group_size;
  if (batch_.count == 1) batch_.shape = shape_text(result);
  if (shape_text(result) != batch_.shape) batch_.shape = "[mixed]";
}

// One line per batch of experts, once its last linear is in:
// "[12/48] model.layers.1.mlp.experts.0-7 gate_proj/up_proj 16x[48x64] ...".
void LinearLog::flush_batch(const std::string& full_name, const LinearResult& result) {
  if (batch_.count == 0) return;
  const std::string layer_prefix = full_name.substr(0, full_name.size() - result.name.size());
  char line[512];
  std::snprintf(line, sizeof line, "[%*d/%d] %s%s %dx%s bits=%d g=%d err=%.2e %.2fs", width_, done_, total_,
                layer_prefix.c_str(), result.batch.c_str(), batch_.count, batch_.shape.c_str(), batch_.bits,
                batch_.group_size, batch_.loss, result.batch_wall_s);
  batch_ = {};
  emit(line, false);
}

// A finished item's line: debug when quiet; on a TTY only warnings print
// (the redrawn line shows the rest); otherwise one info line each.
void LinearLog::emit(const char* line, bool warning) {
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

RunReport::RunReport(const QuantizeOptions& options)
    : json_({{"method", solver::method_name(options.method)},
             {"model", options.model_dir.string()},
             {"output", options.output_dir.string()},
             {"settings", settings_json(options)}}) {}

void RunReport::set_compute(bool calibrated, c10::Device device, c10::ScalarType dtype,
                            const std::string& architecture) {
  json_["method"] = calibrated ? "gptq" : "rtn";
  json_["device"] = device.str();
  json_["dtype"] = model::dtype_to_hf_name(dtype);
  json_["architecture"] = architecture;
}

void RunReport::set_calibration(const QuantizeOptions& options, const CalibrationWindows& windows) {
  const int64_t n_samples = windows.input_ids.size(0);
  const int64_t seqlen = windows.input_ids.size(1);
  json_["calibration"] = {{"file", options.calib_file.string()},
                          {"format", windows.format},
                          {"n_samples", n_samples},
                          {"seqlen", seqlen},
                          {"n_stream_tokens", windows.n_stream_tokens},
                          {"n_tokens", windows.input_ids.numel()},
                          {"seed", options.seed}};
  if (n_samples != options.n_samples || seqlen != options.seqlen) {
    spdlog::info("calibration: the ready windows of '{}' set the run's shape (--nsamples {} and --seqlen {} "
                 "only cap them)", options.calib_file.string(), options.n_samples, options.seqlen);
  }
  spdlog::info("calibration: {} windows x {} tokens from '{}' ({}, {} tokens in the stream)", n_samples, seqlen,
               options.calib_file.string(), windows.format, windows.n_stream_tokens);
}

void RunReport::set_streaming(const model::BlockStats& stats, int64_t max_held_bytes) {
  json_["calibration"]["streamed"] = stats.mlp_recomputed;
  json_["calibration"]["note"] = streaming_note(stats, max_held_bytes);
  spdlog::info("calibration: {}", json_["calibration"]["note"].get<std::string>());
}

void RunReport::finish(const std::string& output, const std::string& format, const nlohmann::json& layers,
                       int64_t zero_points_raised, uint64_t input_bytes, uint64_t output_bytes,
                       const RunTimes& times) {
  if (zero_points_raised > 0) {
    spdlog::info("{}: {} asymmetric group grid(s) had their zero point raised from 0 to 1 "
                 "(GPTQ v1 readers need zero >= 1; --format gptq_v2 keeps them)",
                 format, zero_points_raised);
  }
  const double total_s = seconds_since(times.start);
  const PhaseTimes& blocks = times.blocks;
  json_["layers"] = layers;
  json_["format"] = format;
  json_["zero_points_raised"] = zero_points_raised;
  json_["sizes"] = {{"input_bytes", input_bytes}, {"output_bytes", output_bytes}};
  json_["timings_s"] = {{"load", times.load_s},          {"calibration", times.calibration_s},
                        {"forward", blocks.forward_s},   {"hessian", blocks.hessian_s},
                        {"solve", blocks.solve_s},       {"write", times.write_s},
                        {"total", total_s}};
  spdlog::info("wrote '{}': {} -> {} ({:.2f}x smaller)", output, human_bytes(double(input_bytes)),
               human_bytes(double(output_bytes)),
               output_bytes ? double(input_bytes) / double(output_bytes) : 0.0);
  spdlog::info("time: load {}, calibration {}, forward {}, hessians {}, solves {}, write {}, total {}",
               human_seconds(times.load_s), human_seconds(times.calibration_s), human_seconds(blocks.forward_s),
               human_seconds(blocks.hessian_s), human_seconds(blocks.solve_s), human_seconds(times.write_s),
               human_seconds(total_s));
}

}  // namespace gptq::calib
