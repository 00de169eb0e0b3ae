#include "gptq/calib/output_assembly.h"

#include "gptq/calib/output_format.h"
#include "gptq/core/interrupt.h"
#include "gptq/io/safetensors.h"

namespace gptq::calib {

OutputAssembly::OutputAssembly(const QuantizeOptions& options, const model::ModelConfig& config,
                               const pack::OutputFormat& format, bool writes)
    : options_(options), config_(config), gguf_(options.format == "gguf"), writes_(writes) {
  // A GGUF file is assembled at the end (gguf/gguf_model.h); a checkpoint directory starts here.
  if (!gguf_ && writes_) writer_.emplace(options.model_dir, options.output_dir, format, options.max_shard_bytes);
}

uint64_t OutputAssembly::write(const model::CheckpointWeightSource& source, const QuantizePlan& plan, WorkDir* work,
                               int n_steps, const std::set<std::string>& replaced) {
  if (!writes_) return 0;
  const io::Checkpoint& checkpoint = source.checkpoint();
  if (gguf_) {
    work->mark_finalizing();
    return write_gguf_output(options_, config_, checkpoint, *work, n_steps);
  }
  for (int step = 0; step < n_steps; ++step) {
    throw_if_interrupted("the assembly of the output");
    const std::unique_ptr<io::SafetensorsFile> packed = work->step_tensors(step);
    for (const auto& tensor : packed->tensors()) writer_->add(tensor.name, packed->load(tensor.name));
  }
  for (const auto& name : checkpoint.names()) {
    throw_if_interrupted("the copy of the unquantized tensors");
    if (!replaced.count(name)) writer_->add(name, checkpoint.load(name));
  }
  const pack::RunSettings settings = run_settings(source, plan);
  work->mark_finalizing();
  return writer_->commit(plan.schemes, settings);
}

pack::RunSettings OutputAssembly::run_settings(const model::CheckpointWeightSource& source,
                                               const QuantizePlan& plan) const {
  pack::RunSettings settings;
  settings.desc_act = plan.calibrated && plan.schemes.default_scheme().act_order();
  settings.damp_percent = options_.gptq.damp_percent;
  settings.true_sequential = options_.true_sequential;
  settings.static_groups = options_.gptq.static_groups;
  settings.method = plan.calibrated ? "gptq" : "rtn";
  settings.lm_head = plan.lm_head.has_value();
  settings.untie_word_embeddings =
      settings.lm_head && model::lm_head_tensor_name(source, config_) != config_.arch.lm_head;
  return settings;
}

}  // namespace gptq::calib
