#pragma once
// OutputAssembly: a quantize run's output, put together from its finished
// steps once every step is done.
//
//   GGUF file            (--format gguf) assembled in one go by
//                        calib/output_format.h's write_gguf_output
//   checkpoint directory (pack/checkpoint_writer.h, started when this object
//                        is made, under a temporary name):
//                          1. every step's packed tensors as the work directory
//                             holds them, step by step (so a resumed run writes
//                             the same bytes as an uninterrupted one)
//                          2. every source tensor not written packed, copied
//                             unchanged in its stored dtype
//                          3. config.json / quantize_config.json from the
//                             schemes and the run's settings (pack::RunSettings)
//                          4. the atomic rename (commit)
// The work directory is marked finalizing just before the output appears, so
// a run killed after the rename is recognized as complete by --resume.
//
// Only the process that writes (alone, or rank 0) has anything to do; on the
// other ranks of a data-parallel run both calls do nothing. Errors are
// whatever reading the source or writing the output throws (calib/resume.h
// says what is kept).
#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "gptq/calib/quantize_pipeline.h"
#include "gptq/calib/quantize_plan.h"
#include "gptq/calib/work_dir.h"
#include "gptq/model/config.h"
#include "gptq/model/weights.h"
#include "gptq/pack/checkpoint_writer.h"
#include "gptq/pack/format.h"

namespace gptq::calib {

class OutputAssembly {
 public:
  // A checkpoint directory's writer starts here: InputError if the output
  // exists. `options`, `config` and `format` must outlive this object.
  OutputAssembly(const QuantizeOptions& options, const model::ModelConfig& config, const pack::OutputFormat& format,
                 bool writes);

  // Writes and commits the output from steps [0, n_steps) of `work` and the
  // source's other tensors (`replaced`: the source ".weight" tensors written
  // packed). Returns the output's size in bytes; 0 where this process writes nothing.
  uint64_t write(const model::CheckpointWeightSource& source, const QuantizePlan& plan, WorkDir* work, int n_steps,
                 const std::set<std::string>& replaced);

 private:
  pack::RunSettings run_settings(const model::CheckpointWeightSource& source, const QuantizePlan& plan) const;

  const QuantizeOptions& options_;
  const model::ModelConfig& config_;
  bool gguf_;
  bool writes_;
  std::optional<pack::CheckpointWriter> writer_;
};

}  // namespace gptq::calib
