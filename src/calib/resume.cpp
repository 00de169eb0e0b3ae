#include "gptq/calib/resume.h"

#include <algorithm>

#include "gptq/core/error.h"
#include "gptq/core/log.h"

namespace gptq::calib {
namespace fs = std::filesystem;

void FinishedSteps::add(const StepRecord& record) {
  for (const auto& entry : record.layers) layers.push_back(entry);
  replaced.insert(record.replaced.begin(), record.replaced.end());
  zero_points_raised += record.zero_points_raised;
}

Resume::Resume(const QuantizeOptions& options, bool keeps_state)
    : path_(options.work_dir.empty() ? WorkDir::default_path(options.output_dir) : options.work_dir),
      output_(options.output_dir.string()),
      resumable_(!options.launch) {
  std::error_code exists_error;
  output_exists_ = fs::exists(options.output_dir, exists_error);
  GPTQ_CHECK(!output_exists_ || (options.resume && WorkDir::holds_state(path_)), "output '",
             options.output_dir.string(), "' already exists; choose a new directory or remove it");
  if (keeps_state) work_ = WorkDir::open(path_, options.resume);
}

bool Resume::bind(const std::function<Fingerprint()>& fingerprint, nlohmann::json& report) {
  if (work_) work_->bind(fingerprint());
  if (!output_exists_) return false;
  // Killed after the output's rename, before the work directory was removed.
  GPTQ_CHECK(work_->finalizing(), "output '", output_, "' already exists; choose a new directory or remove it");
  spdlog::info("'{}' is already complete (its run was stopped after writing it); removing '{}'", output_,
               work_->path().string());
  work_->remove();
  report["resume"] = {{"work_dir", path_.string()}, {"steps_restored", "all"}, {"already_complete", true}};
  return true;
}

int Resume::restore(int n_steps, FinishedSteps& finished, nlohmann::json& report) {
  n_steps_ = n_steps;
  const int first_step = work_ ? std::min(work_->steps_done(), n_steps) : 0;
  for (int step = 0; step < first_step; ++step) finished.add(work_->record(step));
  report["resume"] = {{"work_dir", path_.string()}, {"steps_restored", first_step}};
  if (first_step > 0) {
    spdlog::info("resuming from '{}': {} of {} step(s) already done", path_.string(), first_step, n_steps);
  }
  return first_step;
}

at::Tensor Resume::load_input(c10::ScalarType dtype, c10::Device device) const {
  GPTQ_ASSERT(work_ != nullptr, "a resumed step's input without a work directory");
  return work_->load_input(dtype, device);
}

void Resume::commit_step(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                         const at::Tensor& next_input, const StepRecord& record, FinishedSteps& finished) {
  // A data-parallel rank holds only its windows of the next input: not kept.
  if (work_) work_->commit_step(tensors, resumable_ ? next_input : at::Tensor(), record);
  finished.add(record);
}

void Resume::fail_step(const std::string& where) {
  try {
    rethrow_with_context(where);
  } catch (const Error& e) {
    // Nothing to resume: no durable step, or a data-parallel run (which never resumes).
    if (!work_ || work_->steps_done() == 0 || !resumable_) {
      if (work_) work_->remove();
      throw;
    }
    const std::string kept = "'" + work_->path().string() + "' keeps " + std::to_string(work_->steps_done()) +
                             " of " + std::to_string(n_steps_) + " step(s)";
    if (e.exit_code() == 2) rethrow_with_note(kept + "; fix the input, then rerun with --resume or remove it");
    rethrow_with_note(kept + "; rerun with --resume to continue");
  }
}

void Resume::fail_output() {
  try {
    throw;
  } catch (const InputError&) {
    if (!resumable_ && work_) work_->remove();  // a data-parallel run never resumes: nothing worth keeping
    throw;  // a source tensor that cannot be read: the input must change
  } catch (...) {
    if (!resumable_ && work_) work_->remove();
    rethrow_with_note(resumable_ ? "rerun with --resume to write the output from the finished steps ('" +
                                       path_.string() + "')"
                                 : "a data-parallel run does not resume; rerun it");
  }
}

void Resume::finish() {
  if (work_) work_->remove();
}

}  // namespace gptq::calib
