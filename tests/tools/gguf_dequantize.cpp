// gptq_tool_gguf_dequantize: every tensor of a GGUF file decoded by our ggml
// codec (gguf/ggml_codec.h) into one safetensors file of float32 tensors
// under their GGUF names, in the GGUF's PyTorch-order shapes. Used by
// tests/conformance/test_gguf_quantize.py to hold our decoder against gguf-py's.
//   gptq_tool_gguf_dequantize <file.gguf> <out.safetensors>
#include <iostream>

#include "gptq/core/error.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/gguf/gguf_file.h"
#include "gptq/io/safetensors.h"

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::cerr << "usage: gptq_tool_gguf_dequantize <file.gguf> <out.safetensors>\n";
    return 2;
  }
  const gptq::gguf::GgufFileReader reader(argv[1]);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& tensor : reader.tensors()) {
    const at::Tensor values = gptq::gguf::decode_rows(tensor.type, reader.bytes(tensor), tensor.shape.back());
    tensors.emplace_back(tensor.name, values.reshape(tensor.shape).contiguous());
  }
  gptq::io::save_file(argv[2], tensors);
  return 0;
} catch (const gptq::Error& e) {
  std::cerr << "error: " << e.describe() << '\n';
  return e.exit_code();
}
