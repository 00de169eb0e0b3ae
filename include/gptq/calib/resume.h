#pragma once
// Resume: a quantize run's bookkeeping in its work directory (calib/work_dir.h),
// and the policy for what a failure leaves behind.
//
//   open      before any heavy work: an existing output is refused unless
//             --resume finds the run that wrote it; the work directory is
//             opened and locked (a fresh start, or the state --resume continues)
//   bind      the run's fingerprint (calib/run_fingerprint.h) is recorded, or
//             checked against the stored one (InputError naming the part that
//             changed); a run stopped after its output's rename is complete:
//             the directory is removed and nothing is left to do
//   restore   the records of the steps an earlier attempt finished (report
//             entries, source tensors written packed, raised zero points);
//             the run continues at the first step not done
//   commit    each finished step is made durable before the next starts
//   fail      a step that fails keeps the directory once a step is durable:
//             "'<dir>' keeps 3 of 8 step(s); rerun with --resume to continue",
//             or for bad input (exit 2) "...; fix the input, then rerun with
//             --resume or remove it"; with no durable step it is removed.
//             A data-parallel run never resumes: its directory is always removed.
//
// Only the process that writes the output (alone, or rank 0) keeps a work
// directory; on the other ranks of a data-parallel run every call here
// records nothing and keeps nothing.
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gptq/calib/quantize_pipeline.h"
#include "gptq/calib/work_dir.h"

namespace gptq::calib {

// What the output and the report need from the steps finished so far, restored or just done.
struct FinishedSteps {
  nlohmann::json layers = nlohmann::json::array();  // report entries, in step order
  std::set<std::string> replaced;                  // source ".weight" tensors written packed
  int64_t zero_points_raised = 0;

  void add(const StepRecord& record);
};

class Resume {
 public:
  // `keeps_state`: this process writes the output (alone, or rank 0 of a
  // data-parallel run). InputError: the output exists (and no finished run of
  // it is being resumed), the directory holds a run and --resume was not
  // given, or another live run holds it.
  Resume(const QuantizeOptions& options, bool keeps_state);

  // The work directory's path (also where activations offloaded by size go).
  const std::filesystem::path& path() const { return path_; }

  // Records or checks the fingerprint (computed only where a directory is
  // kept: it reads every safetensors header). True when the output was already
  // complete (the run was stopped after writing it): the directory is removed,
  // report["resume"] says so, and the run has nothing left to do.
  bool bind(const std::function<Fingerprint()>& fingerprint, nlohmann::json& report);

  // The finished steps of an earlier attempt (none for a fresh start) into
  // `finished`, and report["resume"]; returns the first step to run.
  int restore(int n_steps, FinishedSteps& finished, nlohmann::json& report);

  // The input of the first step to run when it is not the first step.
  at::Tensor load_input(c10::ScalarType dtype, c10::Device device) const;

  // Makes the step durable (packed tensors, record, then `next_input`;
  // undefined: none is needed) and adds its record to `finished`.
  void commit_step(const std::vector<std::pair<std::string, at::Tensor>>& tensors, const at::Tensor& next_input,
                   const StepRecord& record, FinishedSteps& finished);

  // Call inside a catch block of a failed step named `where`: applies the
  // policy above and rethrows with context and the note on what was kept.
  [[noreturn]] void fail_step(const std::string& where);
  // Call inside a catch block of a failed output assembly: an unreadable
  // source tensor rethrows as it is (the input must change); otherwise the
  // note says how to write the output from the finished steps.
  [[noreturn]] void fail_output();

  // The directory, for the output's assembly (nullptr where this process keeps none).
  WorkDir* work_dir() const { return work_.get(); }
  // The output is in place: the directory is removed.
  void finish();

 private:
  std::filesystem::path path_;
  std::string output_;
  bool output_exists_ = false;
  bool resumable_ = true;  // false for a data-parallel run
  int n_steps_ = 0;
  std::unique_ptr<WorkDir> work_;
};

}  // namespace gptq::calib
