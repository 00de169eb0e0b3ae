#pragma once
// GptqWeightSource: a model::WeightSource over a GPTQ checkpoint directory
// (config.json with "quantization_config": {"quant_method": "gptq",
// "checkpoint_format": "gptq" | "gptq_v2", "bits": b, ..., "dynamic"?}). For
// every quantized linear (a "<prefix>.qweight" is present)
// tensor("<prefix>.weight") returns the dequantized float32 weight [out, in] =
// (code - zero) * scale from the stored tensors (pack::dequantize_gptq) at the
// bits the config's SchemeResolver gives that module (the defaults, or a
// "dynamic" override), converted to the asked dtype/device; every other
// tensor is read as stored. So block_forward, perplexity and logits run
// on a GPTQ checkpoint exactly as its loaders would see it.
//
// It lives in calib (not pack) because pack must not depend on model.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "gptq/model/weights.h"
#include "gptq/solver/scheme.h"

namespace gptq::io {
class Checkpoint;
}

namespace gptq::calib {

// The quantization_config of `dir`/config.json (or quantize_config.json) when it
// describes a GPTQ checkpoint; nullopt for a plain checkpoint. InputError /
// UnsupportedError for a GPTQ config we cannot read (checkpoint_format other
// than "gptq" / "gptq_v2", bits outside {2,3,4,8}, a malformed "dynamic").
struct GptqCheckpointInfo {
  std::string format = "gptq";  // checkpoint_format
  int bits = 4;                 // the defaults; schemes has the per-module answer
  int group_size = 128;
  bool desc_act = false;
  bool sym = true;
  std::shared_ptr<solver::SchemeResolver> schemes;
};
std::optional<GptqCheckpointInfo> detect_gptq_checkpoint(const std::filesystem::path& dir);

class GptqWeightSource : public model::WeightSource {
 public:
  // InputError when `dir` is not a GPTQ checkpoint (see detect_gptq_checkpoint).
  explicit GptqWeightSource(const std::filesystem::path& dir);
  ~GptqWeightSource() override;

  at::Tensor tensor(const std::string& full_name, c10::ScalarType dtype,
                    c10::Device device) const override;
  bool contains(const std::string& full_name) const override;
  std::string describe() const override;
  const GptqCheckpointInfo& info() const { return info_; }

 private:
  // "<prefix>" when `full_name` is "<prefix>.weight" of a quantized linear.
  std::optional<std::string> quantized_prefix(const std::string& full_name) const;

  std::filesystem::path dir_;
  GptqCheckpointInfo info_;
  std::unique_ptr<io::Checkpoint> checkpoint_;
};

// A CheckpointWeightSource or a GptqWeightSource, whichever `dir` holds.
std::unique_ptr<model::WeightSource> open_weight_source(const std::filesystem::path& dir);

}  // namespace gptq::calib
