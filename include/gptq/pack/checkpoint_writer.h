#pragma once
// GptqCheckpointWriter: writes a GPTQ v1 checkpoint directory next to the model
// it came from, atomically.
//
// Output directory layout (what GPTQModel, vLLM and transformers+optimum load):
//   model.safetensors | model-0000i-of-0000N.safetensors + model.safetensors.index.json
//       per quantized linear "<prefix>.qweight" int32 [in*bits/32, out],
//       "<prefix>.qzeros" int32 [n_groups, out*bits/32], "<prefix>.scales" fp16
//       [n_groups, out], "<prefix>.g_idx" int32 [in] (+ "<prefix>.bias" as stored);
//       every other tensor copied unchanged (embeddings, norms, lm_head)
//   config.json           the source config.json plus "quantization_config"
//   quantize_config.json  the same quantization_config on its own
//   every other non-weight file of the source (tokenizer*, generation_config.json,
//   special_tokens_map.json, ...) copied byte for byte
//
// Everything is written under "<output>.tmp-<pid>" beside the output and renamed
// in commit(); the destructor removes the temporary directory if commit() was
// never reached, so a failure never leaves a half-written output. An output
// path that already exists is an InputError (exit 2), checked in the constructor.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gptq/pack/gptq_pack.h"

namespace gptq::io {
class ShardedWriter;
}

namespace gptq::pack {

// The settings recorded in quantization_config (Hugging Face key names).
struct GptqCheckpointSettings {
  int bits = 4;
  int group_size = 128;
  bool desc_act = false;
  bool sym = true;
  double damp_percent = 0.01;
  bool true_sequential = true;
  bool static_groups = false;
  bool mse = false;
  std::string method = "gptq";  // "gptq" or "rtn" (meta only; the format is GPTQ either way)
  // Linears left in full precision (full names without ".weight"); recorded as
  // GPTQModel/vLLM "dynamic" exclusions {"-:<escaped name>": {}} so loaders keep
  // them as plain nn.Linear.
  std::vector<std::string> skipped_modules;
};

// {"quant_method": "gptq", "bits", "group_size", "desc_act", "sym", "lm_head": false,
//  "checkpoint_format": "gptq", "format": "gptq", "pack_dtype": "int32",
//  "meta": {"damp_percent", "true_sequential", "static_groups", "mse", "method",
//           "quantizer": ["gptq-quant:<version>"]},
//  "dynamic": {"-:<name>": {}, ...} only when some linears were skipped}
nlohmann::json gptq_quantization_config(const GptqCheckpointSettings& settings);

// True when a file name in a model directory is a weight file we do not copy.
bool is_weight_file(const std::string& file_name);

class GptqCheckpointWriter {
 public:
  // Throws InputError if `output_dir` exists or `source_dir` has no config.json.
  GptqCheckpointWriter(std::filesystem::path source_dir, std::filesystem::path output_dir,
                       uint64_t max_shard_bytes = uint64_t{4} << 30);
  ~GptqCheckpointWriter();
  GptqCheckpointWriter(const GptqCheckpointWriter&) = delete;
  GptqCheckpointWriter& operator=(const GptqCheckpointWriter&) = delete;

  // "<prefix>.qweight/.qzeros/.scales/.g_idx" for the linear named `prefix`.
  void add_linear(const std::string& prefix, const GptqTensors& tensors);
  // Any other tensor, written as given.
  void add(const std::string& name, const at::Tensor& tensor);

  // Writes the configs and copied files, finishes the shards, renames the
  // temporary directory to the output. Returns the output's total bytes.
  uint64_t commit(const GptqCheckpointSettings& settings);

  const std::filesystem::path& temp_dir() const { return temp_dir_; }

 private:
  std::filesystem::path source_dir_;
  std::filesystem::path output_dir_;
  std::filesystem::path temp_dir_;
  std::unique_ptr<io::ShardedWriter> shards_;
  bool committed_ = false;
};

}  // namespace gptq::pack
