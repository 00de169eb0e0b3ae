// gptq_tool_gguf_export: a full-precision Hugging Face checkpoint written as a
// GGUF file through gguf::plan_gguf_model + write_gguf_model, the same
// mapping (names, order, metadata, tokenizer, Q/K rope permutation,
// llama-quantize's per-tensor types) that `quantize --format gguf` uses.
// For f32/f16/bf16 the encoder is a plain cast done here, so the permutation
// is applied to already-encoded byte rows as it is for GPTQ's blocks; for a
// quantized file type (q4_0 ... q5_k_m) it returns nothing and
// write_gguf_model rounds each tensor to nearest on its plan type, as
// llama-quantize does without an imatrix. Used by
// tests/conformance/test_gguf_export.py against convert_hf_to_gguf.py and
// llama-quantize.
//   gptq_tool_gguf_export <model_dir> <out.gguf> <file type>
// Exit 2 on bad input (an existing output, an unsupported family), as the CLI.
#include <ATen/ATen.h>

#include <iostream>
#include <string>

#include "gptq/core/error.h"
#include "gptq/gguf/gguf_model.h"
#include "gptq/io/safetensors.h"
#include "gptq/model/config.h"

namespace {

namespace gguf = gptq::gguf;

c10::ScalarType float_type_of(gguf::GgmlType type) {
  switch (type) {
    case gguf::GgmlType::kF32: return at::kFloat;
    case gguf::GgmlType::kF16: return at::kHalf;
    case gguf::GgmlType::kBF16: return at::kBFloat16;
    default: break;
  }
  GPTQ_ASSERT(false, "not a float type: ", gguf::type_info(type).name);
  return at::kFloat;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 4) {
    std::cerr << "usage: gptq_tool_gguf_export <model_dir> <out.gguf> <f32|f16|bf16|q4_0|...|q5_k_m>\n";
    return 2;
  }
  const std::filesystem::path model_dir = argv[1];
  const gguf::GgufFileType file_type = gguf::parse_gguf_file_type(argv[3]);
  const gptq::model::ModelConfig config = gptq::model::load_model_config(model_dir);
  const gptq::io::Checkpoint checkpoint = gptq::io::Checkpoint::open(model_dir);
  const gguf::GgufModelPlan plan = gguf::plan_gguf_model(config, checkpoint, file_type);
  // The converter casts from float32 (it upcasts bf16/f16 sources first), so
  // a direct cast of the stored values gives the same bits.
  const auto cast = [&](const gguf::GgufTensorPlan& tensor) {
    if (gguf::type_info(tensor.type).quantized) return at::Tensor();
    const at::Tensor values = checkpoint.load(tensor.hf_name, at::kFloat).to(float_type_of(tensor.type)).contiguous();
    const int64_t n_cols = tensor.shape.back();
    return values.view(at::kByte).reshape({values.numel() / n_cols, gguf::row_bytes(tensor.type, n_cols)});
  };
  const uint64_t n_bytes = gguf::write_gguf_model(argv[2], config, plan, checkpoint, cast);
  std::cout << "{\"bytes\": " << n_bytes << ", \"tensors\": " << plan.tensors.size() << "}\n";
  return 0;
} catch (const gptq::Error& e) {
  std::cerr << "error: " << e.describe() << '\n';
  return e.exit_code();
}
