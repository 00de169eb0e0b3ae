#pragma once
// ModelConfig: a Hugging Face config.json, typed and checked, plus the family's
// ArchSpec. Reads both transformers 4 keys ("torch_dtype", "rope_theta",
// "rope_scaling") and transformers 5 keys ("dtype", "rope_parameters").
//
// Throws InputError naming the key and the file for a missing or mistyped key
// or an inconsistent shape (e.g. n_heads not divisible by n_kv_heads), and
// UnsupportedError for an architecture, activation, dtype or RoPE type we do
// not run.
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "gptq/model/arch.h"

namespace gptq::model {

enum class RopeType { kDefault, kLinear, kLlama3, kYarn };

// inv_freq[i] = 1 / theta^(2i / head_dim), then rescaled per `type`
// (llama3: Meta's Llama 3.1 low/high frequency interpolation; yarn: a ramp
// between extrapolated and factor-interpolated frequencies over the dims
// whose wavelengths fall between beta_fast and beta_slow rotations of the
// original context, and cos/sin times attention_factor).
struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;            // linear, llama3
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 0;  // llama3, yarn
  double beta_fast = 32;         // yarn
  double beta_slow = 1;          // yarn
  bool truncate = true;          // yarn: correction range rounded outwards to whole dims
  double attention_factor = 1;   // yarn: cos and sin are multiplied by it
  // DeepSeek's attention-scale correction for a scaled RoPE (0: none); see
  // LayerSpec::attention_scale.
  double mscale_all_dim = 0;
  // Phi-3 (and others): only the first head_dim * factor dims of each head
  // are rotated; the rest pass through.
  double partial_rotary_factor = 1.0;
};

struct ModelConfig {
  std::filesystem::path dir;  // folder config.json came from (empty if parsed from text)
  std::string architecture;
  ArchSpec arch;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;  // "head_dim" or hidden_size / n_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double clip_qkv = 0;  // OLMoE "clip_qkv"; 0: no clamp
  RopeConfig rope;  // RotaryCache table 0: every layer, or Gemma-3's full-attention layers
  // Gemma-3: rope_parameters["sliding_attention"], table 1, for the sliding layers.
  std::optional<RopeConfig> sliding_rope;
  int64_t rotary_dim = 0;           // head_dim * rope.partial_rotary_factor (even)
  double final_logit_softcap = 0;   // Gemma-2 final_logit_softcapping; 0: none

  bool tie_word_embeddings = false;  // the key; lm_head.weight absent also ties (see weights.h)
  // One entry per layer: its parts, biases, sliding window, widths and
  // true-sequential groups (arch.h); layers may differ.
  std::vector<LayerSpec> layers;

  c10::ScalarType torch_dtype = c10::kFloat;  // "dtype" / "torch_dtype"; float32 when absent
  // quantization_config.quant_method ("gptq", "fp8", ...) when the checkpoint
  // is already quantized; the quantizer refuses such a source.
  std::optional<std::string> quantization_method;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;

  // "model.layers.<i>." (the family's layer prefix).
  std::string layer_prefix(int layer) const;
  // layers[layer], checked.
  const LayerSpec& layer(int layer) const;
  // Linears over all layers (progress totals).
  int64_t n_linears() const;
};

// Reads `dir`/config.json (or `dir` itself when it names a .json file).
ModelConfig load_model_config(const std::filesystem::path& dir);
// Parses config.json text; `source` names it in errors.
ModelConfig parse_model_config(const std::string& json_text, const std::string& source);

// "model.layers.<i>." for the Llama-like families (all supported ones).
std::string layer_prefix(int layer);

// "float32" / "bfloat16" / "float16" <-> ScalarType (UnsupportedError otherwise).
c10::ScalarType dtype_from_hf_name(const std::string& name);
std::string dtype_to_hf_name(c10::ScalarType dtype);

}  // namespace gptq::model
