#pragma once
// OutputFormat: how solved linears become a checkpoint. The pipeline hands a
// format each linear's codes and grid (SolvedLinear) with its Scheme; the
// format owns the packing, the tensor names, the quantization_config keys and
// what its readers need from the solver (solver_scheme). The container (the
// safetensors shards, config files, atomic rename) is CheckpointWriter's.
//
// Formats today (make_output_format):
//   gptq     GPTQ v1 ("checkpoint_format": "gptq"): what vLLM, AutoGPTQ,
//            transformers+optimum and GPTQModel load. Stores zero - 1, so an
//            asymmetric zero of 0 would be misread by per-field readers
//            (vLLM, AutoGPTQ): the solver keeps asymmetric zeros >= 1 for it
//            (quantizer.h min_zero; the report counts the raised grids).
//   gptq_v2  GPTQ v2 ("checkpoint_format": "gptq_v2"): the same tensors with
//            zeros stored as they are, so asymmetric grids need no raise;
//            GPTQModel loads it, vLLM and AutoGPTQ do not.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gptq/solver/grid.h"
#include "gptq/solver/scheme.h"

namespace gptq::pack {

// One linear as the solver left it, original column order.
struct SolvedLinear {
  at::Tensor codes;   // uint8 [out, in], in [0, 2^bits - 1]
  at::Tensor zeros;   // int32 [n_groups, out]
  at::Tensor scales;  // float32 [n_groups, out]
  at::Tensor g_idx;   // int32 [in]
  at::Tensor grid_zeros;  // float32 [n_groups, out]: zeros as the grid fitted them (offsets for ggml grids)
};

// What quantization_config records beyond the schemes.
struct RunSettings {
  bool desc_act = false;
  double damp_percent = 0.01;
  bool true_sequential = true;
  bool static_groups = false;
  std::string method = "gptq";  // "gptq" or "rtn" (meta only)
  bool lm_head = false;          // lm_head is stored quantized ("lm_head": true)
  // lm_head was quantized from a tied embedding: config.json gets
  // tie_word_embeddings false (embed_tokens stays, lm_head is its own tensor).
  bool untie_word_embeddings = false;
};

class OutputFormat {
 public:
  virtual ~OutputFormat() = default;
  // The --format value and the checkpoint_format key.
  virtual std::string name() const = 0;
  // Why a [rows = out, cols = in] linear cannot be stored with `scheme`;
  // nullopt when it can.
  virtual std::optional<std::string> cannot_store(int64_t rows, int64_t cols,
                                                  const solver::Scheme& scheme) const = 0;
  // The scheme as the solver must run it so the stored checkpoint reads back
  // exactly (the v1 zero floor).
  virtual solver::Scheme solver_scheme(const solver::Scheme& scheme) const = 0;
  // Optional: what linear `full_name` ([out, in] = shape) becomes in this
  // format when `asked` was asked for it; nullopt keeps it in full precision
  // with the reason in *why. Default: `asked` (GGUF: the ggml type that
  // llama-quantize's per-tensor rules give that tensor).
  virtual std::optional<solver::Scheme> module_scheme(const std::string& full_name, const std::vector<int64_t>& shape,
                                                      const solver::Scheme& asked, std::string* why) const {
    return asked;
  }
  // Optional: true when the format stores lm_head quantized whether or not
  // a recipe rule asks (GGUF: output.weight is always a ggml type), so the
  // pipeline solves it (GPTQ against the final norm's output) like any
  // linear. Default: false.
  virtual bool quantizes_lm_head() const { return false; }
  // Optional: the grid for a scheme whose `grid` names one (solver::QuantGrid).
  // Default: null, GPTQ's min-max integer grid; a format that names grids
  // must return them.
  virtual std::shared_ptr<const solver::QuantGrid> grid(const solver::Scheme& scheme) const { return nullptr; }
  // The tensors stored for linear `prefix` ("model.layers.0.mlp.up_proj"), CPU.
  virtual std::vector<std::pair<std::string, at::Tensor>> pack(
      const std::string& prefix, const SolvedLinear& solved, const solver::Scheme& scheme) const = 0;
  // config.json "quantization_config" (also written as quantize_config.json).
  virtual nlohmann::json quantization_config(const solver::SchemeResolver& schemes,
                                             const RunSettings& settings) const = 0;
};

// "gptq" or "gptq_v2"; InputError listing them otherwise.
std::unique_ptr<OutputFormat> make_output_format(const std::string& name);
std::vector<std::string> output_format_names();

}  // namespace gptq::pack
