#pragma once
// What a quantize run tells its user, in words and as JSON:
//
//   LinearLog  one stable line per finished linear off a TTY
//              ("[ 97/224] model.layers.13.self_attn.q_proj [4096x4096] bits=4 g=128 err=1.23e-03 0.41s",
//              one line per batch of experts), the redrawn progress line on a
//              TTY (warnings still print), debug lines with --quiet; and each
//              linear's entry of the report's "layers"
//   RunReport  the JSON report run_quantize returns (its keys are listed in
//              calib/quantize_pipeline.h), filled section by section as the
//              run gets there, and the closing summary: sizes and phase
//              timings, the same numbers in "sizes" and "timings_s"
//
// Nothing here decides anything: it only records what the other units did.
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "gptq/calib/block_runner.h"
#include "gptq/calib/calibration.h"
#include "gptq/calib/quantize_pipeline.h"
#include "gptq/core/progress.h"
#include "gptq/model/forward.h"

namespace gptq::calib {

class LinearLog {
 public:
  // `total` linears in the run, `already_done` of them finished by an earlier (resumed) attempt.
  LinearLog(int total, int already_done, const QuantizeOptions& options);

  // Logs one finished linear (named in full) and appends its report entry to `layers`.
  void record(const std::string& full_name, const LinearResult& result, nlohmann::json& layers);
  // Ends the redrawn line (also before an error is printed).
  void finish() { progress_.finish(); }

 private:
  void add_to_batch(const LinearResult& result);
  void flush_batch(const std::string& full_name, const LinearResult& result);
  void emit(const char* line, bool warning);

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

// Wall-clock seconds per phase of the run; the block phases come from the block runner.
struct RunTimes {
  using Clock = std::chrono::steady_clock;
  Clock::time_point start = Clock::now();
  double load_s = 0;
  double calibration_s = 0;
  double write_s = 0;
  PhaseTimes blocks;  // forward, hessian, solve
};

class RunReport {
 public:
  // "method", "model", "output", "settings" (the command line's).
  explicit RunReport(const QuantizeOptions& options);

  // "method" as the plan decided it (gptq when some module calibrates), "device", "dtype", "architecture".
  void set_compute(bool calibrated, c10::Device device, c10::ScalarType dtype, const std::string& architecture);
  // "calibration" with the shape actually used (ready windows may set it), and its info line.
  void set_calibration(const QuantizeOptions& options, const CalibrationWindows& windows);
  // "calibration.streamed" / "note": how the blocks held the MLP activations, and its info line.
  void set_streaming(const model::BlockStats& stats, int64_t max_held_bytes);
  // "layers", "format", "zero_points_raised", "sizes", "timings_s"; the closing
  // lines (raised zero points, sizes, timings).
  void finish(const std::string& output, const std::string& format, const nlohmann::json& layers,
              int64_t zero_points_raised, uint64_t input_bytes, uint64_t output_bytes, const RunTimes& times);

  nlohmann::json& json() { return json_; }

 private:
  nlohmann::json json_;
};

}  // namespace gptq::calib
