#pragma once
// WorkDir: the durable state of a `quantize` run, kept beside its output so a
// run killed at any moment (SIGKILL, OOM killer, power cut, a full disk)
// continues with --resume and writes byte-identical output.
//
// A run is a sequence of steps: one per decoder block, then lm_head when a
// recipe quantizes it. After each step everything the rest of the run needs
// from it is made durable (temporary name, fsync, rename, fsync of the
// directory), in this order:
//
//   <output>.partial/            (or --work-dir DIR)
//     lock                       flock'd by the run that owns the directory
//     step-00003.safetensors     step 3's packed tensors (qweight, qzeros, scales,
//                                g_idx, ...) in the order the output gets them;
//                                metadata "gptq_quant.step": the step's record
//                                (report entries, replaced source tensors, zero
//                                points raised) as JSON
//     input-00004.safetensors    step 4's input: "hidden" [N, T, H] in the compute
//                                dtype, exactly the bytes step 3 produced (only
//                                the newest is kept; absent for an RTN run)
//     state.json                 {"format_version": 1, "fingerprint": {part: value},
//                                 "steps_done": 4, "finalizing": false}
//
// state.json is written last, so it never points at a step whose files are
// not on disk; files of later steps left by a killed attempt are rewritten.
// Once every step is done the output is assembled from the step files (in a
// fresh run exactly as in a resumed one, which is what makes the bytes the
// same), "finalizing" is set just before the output's rename, and the
// directory is removed once the output is in place.
//
// The fingerprint names what determines the output (model weight headers and
// sizes, config.json, calibration token ids, every option that changes a
// byte, the tool version); --resume with any part changed is an InputError
// naming the part with its old and new value.
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "gptq/io/safetensors.h"

namespace gptq::calib {

// Named parts, in a stable order: {"bits", "4"}, {"model weights", "fnv1a64:..."}.
using Fingerprint = std::vector<std::pair<std::string, std::string>>;

// What the rest of the run needs from one finished step.
struct StepRecord {
  nlohmann::json layers = nlohmann::json::array();  // report entries of its linears
  std::vector<std::string> replaced;                 // source ".weight" tensors written packed
  int64_t zero_points_raised = 0;
};

class WorkDir {
 public:
  // `<output>.partial` beside `output_dir`.
  static std::filesystem::path default_path(const std::filesystem::path& output_dir);

  // True when `dir` holds a run's state (state.json).
  static bool holds_state(const std::filesystem::path& dir);

  // Opens `dir`, locked for this object's life (another live run holding the
  // lock is an InputError):
  //   no state there: a fresh start (created if absent);
  //   state there, resume false: InputError saying how to resume or discard it;
  //   state there, resume true: continues after its last durable step once
  //     bind() accepts the fingerprint.
  // Cheap: called before any heavy work, so these errors come first.
  static std::unique_ptr<WorkDir> open(const std::filesystem::path& dir, bool resume);
  // The run's fingerprint: recorded for a fresh start; for a resumed run an
  // InputError naming the first part that differs from the stored one.
  void bind(const Fingerprint& fingerprint);
  ~WorkDir();
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;

  const std::filesystem::path& path() const { return dir_; }
  int steps_done() const { return steps_done_; }
  bool finalizing() const { return finalizing_; }

  // The record of a finished step (read from its file).
  StepRecord record(int step) const;
  // The packed tensors of a finished step, in commit order (tensors() of the file).
  std::unique_ptr<io::SafetensorsFile> step_tensors(int step) const;
  // The input of step steps_done(): the previous step's stored output. InputError
  // naming the file when it is missing or does not hold "hidden".
  at::Tensor load_input(c10::ScalarType dtype, c10::Device device) const;

  // Makes step steps_done() durable and advances steps_done(): its packed
  // tensors and record, then `next_input` (undefined: none is needed), then
  // the state; then removes the previous step's input.
  void commit_step(const std::vector<std::pair<std::string, at::Tensor>>& tensors, const at::Tensor& next_input,
                   const StepRecord& record);
  // Records, durably, that the complete output is about to be renamed into place.
  void mark_finalizing();
  // Deletes the directory and everything in it (the output is in place).
  void remove();

 private:
  explicit WorkDir(std::filesystem::path dir);
  std::filesystem::path step_file(int step) const;
  std::filesystem::path input_file(int step) const;
  void write_state() const;
  void remove_leftovers() const;

  std::filesystem::path dir_;
  Fingerprint fingerprint_;
  nlohmann::json stored_fingerprint_;  // a resumed run's, until bind()
  bool bound_ = false;
  int lock_fd_ = -1;
  int steps_done_ = 0;
  bool finalizing_ = false;
};

// 64-bit FNV-1a of `bytes`, continuing from `hash` (the fingerprint's hashes).
uint64_t fnv1a64(const void* bytes, size_t n_bytes, uint64_t hash = 0xcbf29ce484222325ULL);
std::string hex64(uint64_t value);

}  // namespace gptq::calib
