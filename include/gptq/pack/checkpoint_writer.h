#pragma once
// CheckpointWriter: the container of a quantized checkpoint, written next to
// the model it came from, atomically; what each quantized linear stores and
// what quantization_config says come from its OutputFormat (pack/format.h).
//
// Output directory layout (what GPTQModel, vLLM and transformers+optimum load):
//   model.safetensors | model-0000i-of-0000N.safetensors + model.safetensors.index.json
//       per quantized linear the format's tensors (GPTQ: "<prefix>.qweight",
//       ".qzeros", ".scales", ".g_idx"; "<prefix>.bias" as stored);
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

#include "gptq/pack/format.h"

namespace gptq::io {
class ShardedWriter;
}

namespace gptq::pack {

// True when a file name in a model directory is a weight file we do not copy.
bool is_weight_file(const std::string& file_name);

class CheckpointWriter {
 public:
  // Throws InputError if `output_dir` exists or `source_dir` has no config.json.
  // `format` must outlive the writer.
  CheckpointWriter(std::filesystem::path source_dir, std::filesystem::path output_dir,
                   const OutputFormat& format, uint64_t max_shard_bytes = uint64_t{4} << 30);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // The format's tensors for the linear named `prefix`.
  void add_linear(const std::string& prefix, const SolvedLinear& solved, const solver::Scheme& scheme);
  // Any other tensor, written as given.
  void add(const std::string& name, const at::Tensor& tensor);

  // Writes the configs (the format's quantization_config for `schemes` and
  // `settings`) and copied files, finishes the shards, renames the temporary
  // directory to the output. Returns the output's total bytes.
  uint64_t commit(const solver::SchemeResolver& schemes, const RunSettings& settings);
  const OutputFormat& format() const { return format_; }

  const std::filesystem::path& temp_dir() const { return temp_dir_; }

 private:
  std::filesystem::path source_dir_;
  std::filesystem::path output_dir_;
  std::filesystem::path temp_dir_;
  const OutputFormat& format_;
  std::unique_ptr<io::ShardedWriter> shards_;
  bool committed_ = false;
};

}  // namespace gptq::pack
