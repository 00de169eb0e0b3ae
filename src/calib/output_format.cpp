#include "gptq/calib/output_format.h"

#include <ATen/ATen.h>

#include <map>

#include "gptq/core/error.h"
#include "gptq/core/interrupt.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/gguf/gguf_file.h"
#include "gptq/gguf/gguf_format.h"
#include "gptq/gguf/gguf_model.h"

namespace gptq::calib {
namespace {

gguf::GgufModelPlan gguf_plan(const QuantizeOptions& options, const model::ModelConfig& config,
                              const io::Checkpoint& checkpoint) {
  const gguf::GgufFileType file_type = gguf::parse_gguf_file_type(options.gguf_type);
  GPTQ_CHECK(gguf::type_info(gguf::default_tensor_type(file_type)).quantized, "--gguf-type ", options.gguf_type,
             " is not a quantized type: there is nothing to solve (llama.cpp's convert_hf_to_gguf.py writes it)");
  return gguf::plan_gguf_model(config, checkpoint, file_type);
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
  // Which step file holds each solved linear's blocks.
  std::vector<std::unique_ptr<io::SafetensorsFile>> steps;
  std::map<std::string, size_t> solved;
  for (int step = 0; step < n_steps; ++step) {
    steps.push_back(work.step_tensors(step));
    for (const auto& tensor : steps.back()->tensors()) solved[tensor.name] = steps.size() - 1;
  }
  gguf::GgufFileWriter writer(options.output_dir);
  gguf::write_gguf_metadata(writer, config, plan);
  for (const auto& tensor : plan.tensors) {
    throw_if_interrupted("the assembly of the output");
    // The rope permutation moves whole rows: of blocks once encoded, of values otherwise.
    auto permuted = [&](const at::Tensor& rows) {
      return tensor.permute_heads > 0 ? gguf::permute_rows_for_rope(rows, tensor.permute_heads) : rows;
    };
    at::Tensor bytes;
    if (tensor.hf_name.empty()) {
      bytes = gguf::quantize_rows(tensor.type, plan.rope_freqs.unsqueeze(0), at::Tensor());
    } else if (auto found = solved.find(tensor.hf_name); found != solved.end()) {
      bytes = steps[found->second]->load(tensor.hf_name);
      GPTQ_ASSERT(bytes.scalar_type() == at::kByte && bytes.dim() == 2 &&
                      bytes.size(1) == gguf::row_bytes(tensor.type, tensor.shape.back()),
                  tensor.hf_name, ": the work directory's blocks are not ", gguf::type_info(tensor.type).name);
      bytes = permuted(bytes);
    } else {
      // Not solved: embeddings, lm_head, norms, biases, linears the file keeps unquantized.
      at::Tensor values = permuted(checkpoint.load(tensor.hf_name, at::kFloat));
      if (values.dim() == 1) values = values.unsqueeze(0);
      bytes = gguf::quantize_rows(tensor.type, values, at::Tensor());
    }
    writer.add_tensor(tensor.name, tensor.type, tensor.shape, bytes);
  }
  return writer.commit();
}

}  // namespace gptq::calib
