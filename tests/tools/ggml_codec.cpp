// Drives gptq::gguf's ggml codec from tests/conformance/test_gguf_codec.py:
//   ggml_codec IN.safetensors OUT.safetensors
// IN holds weights "W.<name>" (float32 [rows, cols]) and for each a
// calibration batch "X.<name>" (float32 [n, cols]). For every quantized ggml
// type T (name as ggml spells it) OUT gets, per weight:
//   <name>.<T>.rtn.bytes       quantize_rows(T, W) (no importance)
//   <name>.<T>.rtn.decode      decode_rows of those bytes
//   <name>.<T>.imatrix.bytes   quantize_rows(T, W, diag(H)) (K-quants only)
//   <name>.<T>.imatrix.decode
//   <name>.<T>.gptq.bytes      encode_rows of gptq_quantize(W, H) on make_ggml_grid(T)
//   <name>.<T>.gptq.decode     decode_rows of those bytes
//   <name>.<T>.gptq.deq        the solver's own dequantized weight
// with H = 2 X^T X / n. Errors: one line on stderr, exit 2 (input) or 1.
#include <ATen/ATen.h>

#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "gptq/core/error.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/gguf/ggml_grid.h"
#include "gptq/io/safetensors.h"
#include "gptq/solver/gptq.h"

namespace {

using gptq::gguf::GgmlType;

const std::vector<GgmlType> kTypes = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0,
                                      GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

void run(const std::string& in_path, const std::string& out_path) {
  const auto in = gptq::io::SafetensorsFile::open(in_path);
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& info : in->tensors()) {
    if (info.name.rfind("W.", 0) != 0) continue;
    const std::string name = info.name.substr(2);
    const at::Tensor W = in->load(info.name, at::kFloat);
    const at::Tensor X = in->load("X." + name, at::kFloat);
    const at::Tensor H = 2.0f * X.t().mm(X) / static_cast<float>(X.size(0));
    const int64_t n_cols = W.size(1);
    for (GgmlType type : kTypes) {
      const std::string prefix = name + "." + std::string(gptq::gguf::type_info(type).name);
      auto add_bytes = [&](const std::string& variant, const at::Tensor& bytes) {
        out.emplace_back(prefix + "." + variant + ".bytes", bytes);
        out.emplace_back(prefix + "." + variant + ".decode", gptq::gguf::decode_rows(type, bytes, n_cols));
      };
      add_bytes("rtn", gptq::gguf::quantize_rows(type, W, at::Tensor()));
      const auto grid = gptq::gguf::make_ggml_grid(type);
      if (grid->fits_jointly()) {
        add_bytes("imatrix", gptq::gguf::quantize_rows(type, W, H.diagonal().contiguous()));
      }
      gptq::solver::GptqConfig config;
      config.quant.group_size = static_cast<int>(gptq::gguf::ggml_group_size(type));
      config.grid = grid;
      const gptq::solver::QuantizedWeight solved = gptq::solver::gptq_quantize(W, H, config);
      add_bytes("gptq", gptq::gguf::encode_rows(type, solved.codes, solved.scales, solved.grid_zeros));
      out.emplace_back(prefix + ".gptq.deq", solved.dequantized.contiguous());
    }
  }
  gptq::io::save_file(out_path, out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: gptq_tool_ggml_codec IN.safetensors OUT.safetensors\n";
    return 2;
  }
  try {
    run(argv[1], argv[2]);
  } catch (const gptq::InputError& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 2;
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
