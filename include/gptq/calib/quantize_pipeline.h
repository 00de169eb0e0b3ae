#pragma once
// The whole `gptq-quant quantize` / `gptq-quant rtn` job: model directory in,
// quantized checkpoint directory (or GGUF file) out. run_quantize is the
// procedure; each concern it steps through is one unit:
//
//   plan       config.json (ArchSpec), the lazy safetensors checkpoint, every
//              module's scheme (calib/quantize_plan.h); --dry-run stops here
//   resume     the work directory opened and locked before any heavy work
//              (calib/resume.h)
//   calibrate  windows [N, T] from --calib (calib/calibration.h), tokenized with
//              the model's tokenizer; they complete the run's fingerprint, and a
//              resumed run restores its finished steps
//   ranks      a data-parallel run keeps this process's windows and joins the
//              others (calib/data_parallel.h)
//   embed      hidden [N, T, H] for the windows, resident on the device (or in
//              files with offload_dir: model/activation_file.h)
//   per step   a block: its weights loaded, one forward pass that observes each
//              group, solves it and sinks its linears (calib/block_runner.h);
//              its output is the next block's input. Then lm_head when the plan
//              quantizes it. Each linear is logged (calib/run_report.h) and
//              packed; the step is made durable in the work directory
//              (calib/work_dir.h), so a killed run continues with --resume and
//              writes the same bytes
//   assemble   the output from the finished steps, committed by an atomic
//              rename (calib/output_assembly.h); the work directory is removed
//   report     the JSON below and the closing summary (calib/run_report.h)
//
// Memory: one block's weights + the block's hidden-size activations for all
// windows (on the device, or in files with offload_dir: model/activation_file.h); tensors of
// intermediate size exist for one chunk of windows at a time, and the MLP
// activation of all windows is held only within block.max_held_bytes, else
// recomputed per chunk (the report's calibration.streamed / note say which).
// Hessians are fp32; the block computes in --dtype (auto: the checkpoint's).
// Errors: InputError / UnsupportedError (exit 2) for a bad model directory,
// an already quantized source, calibration file, existing output, a group
// size that does not divide a quantized linear's input width, or options that
// contradict each other, all checked before any heavy work.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "gptq/calib/block_runner.h"
#include "gptq/calib/recipe.h"
#include "gptq/dist/communicator.h"
#include "gptq/model/forward.h"
#include "gptq/solver/gptq.h"
#include "gptq/solver/scheme.h"

namespace gptq::calib {

using Method = solver::SolveMethod;

struct QuantizeOptions {
  std::filesystem::path model_dir;
  std::filesystem::path output_dir;
  // The command: kGptq (`quantize`: calibrates when some module is solved
  // with GPTQ) or kRtn (`rtn`: no calibration; every module must be RTN).
  Method method = Method::kGptq;
  // How a module no recipe rule decides is solved under `quantize` (a
  // recipe's default "method"); under `rtn` always RTN.
  Method default_method = Method::kGptq;
  solver::GptqConfig gptq;          // quant settings (and damping, act-order for GPTQ)
  bool true_sequential = true;
  model::BlockOptions block;         // windows per chunk, MLP hold budget (model/forward.h)
  std::filesystem::path calib_file;  // required for GPTQ
  // Windows drawn from a token stream or text; ready windows (a JSON list of
  // lists) set their own count and length, which these then only cap.
  int n_samples = 128;
  int seqlen = 2048;
  uint64_t seed = 0;
  std::string device = "auto";       // auto | cpu | cuda[:N] | mps (backend/device.h)
  std::string dtype = "auto";        // auto | fp32 | bf16 | fp16 (backend/device.h)
  std::string format = "gptq";       // output format: gptq (v1) | gptq_v2 (pack/format.h) | gguf (gguf/gguf_format.h)
  // --format gguf: the llama.cpp file type (q4_0 ... q5_k_m); the output is one file.
  std::string gguf_type = "q4_k_m";
  uint64_t max_shard_bytes = uint64_t{4} << 30;
  bool progress = true;              // per-linear lines / redrawn line on a TTY
  // --on-solve-failure rtn: a GPTQ solve failing numerically is rounded to
  // nearest with a warning (and "solve_failure" in the report) instead of
  // ending the job.
  bool rtn_on_solve_failure = false;
  // Per-module schemes (calib/recipe.h) on top of gptq.quant, which already
  // holds the recipe's default with the command line's flags applied.
  std::optional<Recipe> recipe;
  // Resolve and print every linear's scheme (stdout), check everything, and
  // stop before loading weights or writing anything.
  bool dry_run = false;
  // Where the run keeps its durable per-block state (calib/work_dir.h);
  // empty: "<output_dir>.partial" beside the output.
  std::filesystem::path work_dir;
  // Where the block-boundary activations (tensors of hidden size for all
  // windows) live: empty keeps them in RAM unless they would exceed
  // max_activation_bytes, then they go to files in the work directory; the
  // output is identical either way (model/activation_file.h). CPU only.
  std::filesystem::path offload_dir;
  int64_t max_activation_bytes = -1;  // -1: a quarter of physical RAM; 0: never offload by itself
  // Continue the run whose state is in work_dir after its last durable
  // block (nothing there: start from the first block).
  bool resume = false;
  // Data-parallel: this process's place in a torchrun / srun / mpirun launch
  // (dist::launch_from_env); nullopt runs alone. Every process loads the same
  // windows and keeps its contiguous share, runs the blocks on it, sums the
  // Hessians over all processes (Gloo on CPU, NCCL on CUDA) and solves its
  // share of every stacked solve's rows; the results are gathered so every
  // process continues with the same weights. Rank 0 alone keeps the work
  // directory and writes the output and the report. No --resume.
  std::optional<dist::LaunchInfo> launch;
  // A collective (or the rendezvous) waiting longer than this fails the run.
  std::chrono::milliseconds dist_timeout{std::chrono::minutes(30)};
  // Where every stacked solve runs (block_runner.h SolveContext::solve);
  // empty: in this process. The CLI sets it for --workers.
  SolveFunction solve;
};

// Runs the job and returns the report (also what --report writes):
// {"method", "model", "output", "settings": {...}, "device", "dtype",
//  "calibration": {"file", "format", "n_samples", "seqlen" (the windows' shape as
//                  used: ready windows set theirs, calib/calibration.h), "n_tokens", "seed",
//                  "streamed": true when the MLP activations were recomputed
//                  per chunk instead of held, "note": which, in words},
//  "layers": [{"name", "shape": [out, in], "quantized", "loss", "damp_used",
//              "n_tokens", "seconds", quantized: "bits", "group_size",
//              "zero_points_raised", "solved_with" (linears in its stacked
//              solve); kept: "reason"}],
//  "format", "zero_points_raised" (asymmetric grids whose zero the v1 floor raised),
//  "sizes": {"input_bytes", "output_bytes"},
//  "timings_s": {"load", "calibration", "forward", "hessian", "solve", "write", "total"},
//  data-parallel runs: "distributed": {"rank", "world_size", "launcher", "backend",
//                  "windows": this process's, "collectives", "collective_bytes", "collective_s"}}
nlohmann::json run_quantize(const QuantizeOptions& options);

}  // namespace gptq::calib
