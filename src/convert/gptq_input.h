#pragma once
// A GPTQ checkpoint opened for conversion: its config, the per-module schemes
// (calib::detect_gptq_checkpoint, "dynamic" included), the quantized linears
// and their tensors. Every error is an InputError naming the file or tensor.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gptq/calib/gptq_weight_source.h"
#include "gptq/io/safetensors.h"
#include "gptq/pack/gptq_pack.h"

namespace gptq::convert {

class GptqInput {
 public:
  // InputError when `dir` is not a GPTQ checkpoint or its config is malformed.
  explicit GptqInput(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const calib::GptqCheckpointInfo& info() const { return info_; }
  const io::Checkpoint& checkpoint() const { return checkpoint_; }
  const nlohmann::json& config() const { return config_; }              // config.json
  const nlohmann::json& quantization() const { return quantization_; }  // its quantization_config
  pack::ZeroEncoding encoding() const;

  // "<prefix>" of every "<prefix>.qweight", sorted.
  const std::vector<std::string>& linears() const { return linears_; }
  // True for "<prefix>.qweight|qzeros|scales|g_idx" of a quantized linear.
  bool is_linear_part(const std::string& tensor_name) const;
  // The scheme of a stored linear; InputError if "dynamic" excludes it.
  solver::Scheme scheme(const std::string& prefix) const;
  // The stored tensors (g_idx made sequential when absent) and their content.
  pack::GptqTensors load_packed(const std::string& prefix) const;
  pack::UnpackedGptq load(const std::string& prefix) const;

 private:
  std::filesystem::path dir_;
  calib::GptqCheckpointInfo info_;
  io::Checkpoint checkpoint_;
  nlohmann::json config_;
  nlohmann::json quantization_;
  std::vector<std::string> linears_;
};

}  // namespace gptq::convert
