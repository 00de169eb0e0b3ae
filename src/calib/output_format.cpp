#include "gptq/calib/output_format.h"

#include <ATen/ATen.h>

#include <map>

#include "gptq/core/error.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/gguf/gguf_format.h"
#include "gptq/gguf/gguf_model.h"

namespace gptq::calib {
namespace {

gguf::GgufModelPlan gguf_plan(const QuantizeOptions& options, const model::ModelConfig& config,
                              const io::Checkpoint& checkpoint) {
  const gguf::GgufFileType file_type = gguf::parse_gguf_file_type(options.gguf_type);
  GPTQ_CHECK(gguf::type_info(gguf::default_tensor_type(file_type)).quantized, "--gguf-type ", options.gguf_type,
             " is not a quantized type: there is nothing to solve (llama.cpp's convert_hf_to_gguf.py writes it)");
  return gguf::plan_gguf_model(config, gguf::source_tensors(checkpoint), file_type);
}

}  // namespace

std::vector<std::string> output_format_names() {
  std::vector<std::string> names = pack::output_format_names();
  names.push_back("gguf");
  return names;
}

std::unique_ptr<pack::OutputFormat> make_format(const QuantizeOptions& options, const model::ModelConfig& config,
                                                const io::Checkpoint& checkpoint) {
  if (options.format != "gguf") return pack::make_output_format(options.format);
  GPTQ_CHECK(!options.recipe, "--recipe with --format gguf: a GGUF file's tensor types come from --gguf-type "
             "(llama-quantize's per-tensor rules), not from recipe rules");
  return gguf::make_gguf_format(gguf_plan(options, config, checkpoint));
}

uint64_t write_gguf_output(const QuantizeOptions& options, const model::ModelConfig& config,
                           const io::Checkpoint& checkpoint, const WorkDir& work, int n_steps) {
  const gguf::GgufModelPlan plan = gguf_plan(options, config, checkpoint);
  // Which step file holds each solved linear's blocks; the rest is rounded to nearest.
  std::vector<std::unique_ptr<io::SafetensorsFile>> steps;
  std::map<std::string, size_t> solved;
  for (int step = 0; step < n_steps; ++step) {
    steps.push_back(work.step_tensors(step));
    for (const auto& tensor : steps.back()->tensors()) solved[tensor.name] = steps.size() - 1;
  }
  return gguf::write_gguf_model(options.output_dir, config, plan, checkpoint,
                                [&](const gguf::GgufTensorPlan& tensor) -> at::Tensor {
                                  const auto found = solved.find(tensor.hf_name);
                                  return found == solved.end() ? at::Tensor() : steps[found->second]->load(tensor.hf_name);
                                });
}

}  // namespace gptq::calib
