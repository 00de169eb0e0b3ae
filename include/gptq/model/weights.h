#pragma once
// Where the model's tensors come from, and one decoder block's tensors.
//
// WeightSource is the pluggable seam: the plain implementation reads a
// safetensors checkpoint (gptq::io::Checkpoint, mmap'd, lazy); a GPTQ
// checkpoint implementation returns dequantized weights for its linears under
// the same names, so every consumer (block forward, perplexity) runs on both.
//
// Names are full Hugging Face names ("model.layers.0.self_attn.q_proj.weight").
// A tensor is returned as a new tensor of `dtype` on `device` that the caller
// owns. Missing tensors and shape mismatches are InputError naming the tensor
// and the source.
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gptq/model/config.h"

namespace gptq::io {
class Checkpoint;
}

namespace gptq::model {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The tensor converted to `dtype` on `device`; InputError if absent.
  virtual at::Tensor tensor(const std::string& full_name, c10::ScalarType dtype,
                            c10::Device device) const = 0;
  virtual bool contains(const std::string& full_name) const = 0;
  // Where the tensors come from, for messages ("/models/llama (3 shards)").
  virtual std::string describe() const = 0;
};

// Unquantized safetensors checkpoint: model.safetensors or a sharded folder.
class CheckpointWeightSource : public WeightSource {
 public:
  explicit CheckpointWeightSource(const std::filesystem::path& dir);
  ~CheckpointWeightSource() override;

  at::Tensor tensor(const std::string& full_name, c10::ScalarType dtype,
                    c10::Device device) const override;
  bool contains(const std::string& full_name) const override;
  std::string describe() const override;
  const io::Checkpoint& checkpoint() const { return *checkpoint_; }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<io::Checkpoint> checkpoint_;
};

// One decoder block's tensors, keyed by the name relative to the layer
// ("self_attn.q_proj.weight", "self_attn.q_proj.bias", "input_layernorm.weight",
// "self_attn.q_norm.weight", ...). Linear weights are [out_features, in_features].
struct BlockWeights {
  std::map<std::string, at::Tensor> tensors;
  int layer = -1;  // set by load_block; selects per-layer settings (sliding window)

  // InputError naming `name` if absent.
  const at::Tensor& at(const std::string& name) const;
  // nullptr if absent (optional biases).
  const at::Tensor* find(const std::string& name) const;
  int64_t nbytes() const;
};

// Loads layer `layer` through `source`, converted to `dtype` on `device`, and
// checks every shape against `config` (InputError naming tensor and shapes).
BlockWeights load_block(const WeightSource& source, const ModelConfig& config, int layer,
                        c10::ScalarType dtype, c10::Device device);

// [out_features, in_features] of `linear` (relative name) in layer `layer`,
// as config.json implies it.
std::vector<int64_t> linear_shape(const ModelConfig& config, int layer, const std::string& linear);

// Embedding matrix [vocab, hidden].
at::Tensor load_embedding(const WeightSource& source, const ModelConfig& config,
                          c10::ScalarType dtype, c10::Device device);

// Final norm and the output projection. lm_head is embed_tokens when the
// config ties them or the checkpoint has no lm_head.weight.
struct HeadWeights {
  at::Tensor final_norm;  // [hidden]
  at::Tensor lm_head;     // [vocab, hidden]
};
HeadWeights load_head(const WeightSource& source, const ModelConfig& config, c10::ScalarType dtype,
                      c10::Device device);
// The tensor name lm_head is read from (lm_head.weight or the embedding).
std::string lm_head_tensor_name(const WeightSource& source, const ModelConfig& config);

}  // namespace gptq::model
