#pragma once
// DataParallel: this process's part in a data-parallel quantize run
// (QuantizeOptions::launch: torchrun, srun, mpirun), or the trivial part of a
// run alone, so the pipeline never asks which it is.
//
//   windows   every process loads the same calibration windows and keeps its
//             contiguous share (dist::rows_of_rank); fewer windows than
//             processes is an InputError naming --nsamples
//   comm      the communicator (dist/communicator.h), joined after the work
//             directory is settled; the block runner sums Hessians and MoE
//             routing counts over it and splits every stacked solve's rows
//   offload   activations offloaded by size go to the work directory on rank
//             0 (or alone) and beside it, "<work dir>.rank<N>", on the other
//             ranks (never into rank 0's); a rank's own directory is removed
//             when a step fails and at the end
//   finish    every process ends together: a barrier after rank 0's commit,
//             so a rank 0 that failed to write fails them all; the report's
//             "distributed" section and one info line
//
// Rank 0 alone (or the process alone) writes: it keeps the work directory,
// the output and the report. A data-parallel run never resumes (--resume is
// refused here), because its work directory holds no block inputs.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "gptq/calib/quantize_pipeline.h"
#include "gptq/dist/communicator.h"

namespace gptq::calib {

class DataParallel {
 public:
  // InputError for --resume with a launch.
  explicit DataParallel(const QuantizeOptions& options);

  // This process writes the output and keeps the work directory (alone, or rank 0).
  bool writes() const { return !launch_ || launch_->rank == 0; }
  // " in N processes" for the fingerprint's compute part ("" alone): no
  // single-process run ever resumes a data-parallel run's directory.
  std::string fingerprint_note() const;

  // Joins the other processes and returns this process's windows of `ids`
  // (all of them alone; undefined stays undefined for a run without
  // calibration). `work_dir` is the run's work directory (calib/resume.h).
  at::Tensor join(const at::Tensor& ids, const std::filesystem::path& work_dir, c10::Device device);
  // nullptr alone.
  dist::Communicator* comm() const { return comm_.get(); }
  // Where activations offloaded by size go (after join()).
  const std::filesystem::path& offload_dir() const { return offload_dir_; }

  // A step failed: a rank other than 0 removes its own offload directory.
  void discard() const;
  // After rank 0's commit: the barrier, the offload directory removed, and
  // report["distributed"] {"rank", "world_size", "launcher", "backend",
  // "windows", "collectives", "collective_bytes", "collective_s"}. Nothing alone.
  void finish(nlohmann::json& report) const;

 private:
  std::optional<dist::LaunchInfo> launch_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<dist::Communicator> comm_;
  std::filesystem::path offload_dir_;
  int64_t n_windows_ = 0;  // this process's
};

}  // namespace gptq::calib
