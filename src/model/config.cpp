// config.json -> ModelConfig. Every error names the key and the file. This
// file reads the model-wide keys in a fixed order (so a file with several
// mistakes always reports the same one first); the RoPE keys are
// rope_config.cpp's, the per-layer settings layer_specs.cpp's.
#include "gptq/model/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gptq/core/error.h"
#include "gptq/io/json.h"
#include "model/config_keys.h"
#include "model/layer_specs.h"
#include "model/rope_config.h"

namespace gptq::model {
namespace {

using detail::Keys;
using nlohmann::json;

// config.json parsed as every other file of a checkpoint is (io/json.h:
// one-line errors, repeated keys refused).
json parse_json_object(const std::string& json_text, const std::string& source) {
  json root = io::parse_json_strict(json_text, source);
  GPTQ_CHECK(root.is_object(), source, ": expected a JSON object");
  return root;
}

std::string first_architecture(const Keys& keys) {
  const json& list = keys.raw("architectures");
  GPTQ_CHECK(list.is_array() && !list.empty() && list[0].is_string(), keys.source(),
             ": key 'architectures' must be a non-empty list of names");
  return list[0].get<std::string>();
}

// Widths, counts and eps; the MLA widths for a latent-attention family (its
// head_dim is the rotated part of a head, as transformers sets it).
MlaShape parse_dimensions(const Keys& keys, ModelConfig& config) {
  const std::string& source = keys.source();
  config.vocab_size = keys.positive("vocab_size");
  config.hidden_size = keys.positive("hidden_size");
  config.intermediate_size = keys.positive("intermediate_size");
  config.n_layers = keys.positive("num_hidden_layers");
  config.n_heads = keys.positive("num_attention_heads");
  config.n_kv_heads = keys.positive_or("num_key_value_heads", config.n_heads);
  GPTQ_CHECK(config.n_heads % config.n_kv_heads == 0, source, ": num_attention_heads (",
             config.n_heads, ") must be a multiple of num_key_value_heads (", config.n_kv_heads, ")");
  if (keys.has("head_dim")) {
    config.head_dim = keys.positive("head_dim");
  } else {
    GPTQ_CHECK(config.hidden_size % config.n_heads == 0, source, ": hidden_size (",
               config.hidden_size, ") is not divisible by num_attention_heads (", config.n_heads,
               ") and there is no 'head_dim' key");
    config.head_dim = config.hidden_size / config.n_heads;
  }
  MlaShape mla;
  if (config.arch.attention.kind == AttentionKind::kMla) {
    mla = detail::parse_mla(keys);
    config.head_dim = mla.qk_rope_head_dim;
    GPTQ_CHECK_SUPPORTED(config.n_kv_heads == config.n_heads, source, ": num_key_value_heads (", config.n_kv_heads,
                         ") != num_attention_heads (", config.n_heads, ") is not supported for latent attention");
  }
  GPTQ_CHECK(config.head_dim % 2 == 0, source, ": head_dim must be even for RoPE, got ",
             config.head_dim);
  config.max_position_embeddings = keys.positive_or("max_position_embeddings", 2048);
  config.rms_norm_eps = keys.number_or("rms_norm_eps", 1e-6);
  GPTQ_CHECK(config.rms_norm_eps >= 0, source, ": key 'rms_norm_eps' must not be negative");
  return mla;
}

// The dtype, an existing quantization and the special token ids.
void parse_metadata(const json& root, const Keys& keys, ModelConfig& config) {
  std::string dtype_key = keys.has("dtype") ? "dtype" : "torch_dtype";
  if (keys.has(dtype_key)) {
    try {
      config.torch_dtype = dtype_from_hf_name(keys.string_or(dtype_key, "float32"));
    } catch (const UnsupportedError& e) {
      throw UnsupportedError(keys.source() + ": key '" + dtype_key + "': " + e.what());
    }
  }
  if (keys.has("quantization_config")) {
    const json& quantization = root.at("quantization_config");
    config.quantization_method =
        quantization.is_object() && quantization.contains("quant_method") &&
                quantization.at("quant_method").is_string()
            ? quantization.at("quant_method").get<std::string>()
            : std::string("unknown");
  }
  config.bos_token_id = keys.optional_integer("bos_token_id");
  config.eos_token_id = keys.optional_integer("eos_token_id");
}

}  // namespace

std::string ModelConfig::layer_prefix(int layer) const {
  return arch.layer_prefix + std::to_string(layer) + ".";
}

const LayerSpec& ModelConfig::layer(int layer) const {
  GPTQ_ASSERT(layer >= 0 && layer < static_cast<int>(layers.size()), "layer ", layer, " out of range");
  return layers[layer];
}

int64_t ModelConfig::n_linears() const {
  int64_t total = 0;
  for (const auto& spec : layers) total += static_cast<int64_t>(spec.linear_names().size());
  return total;
}

std::string layer_prefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }

c10::ScalarType dtype_from_hf_name(const std::string& name) {
  if (name == "float32" || name == "float") return c10::kFloat;
  if (name == "bfloat16") return c10::kBFloat16;
  if (name == "float16" || name == "half") return c10::kHalf;
  throw UnsupportedError("dtype '" + name + "' is not supported (float32, bfloat16, float16)");
}

std::string dtype_to_hf_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    default: throw UnsupportedError(std::string("dtype ") + c10::toString(dtype) + " is not supported");
  }
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  const json root = parse_json_object(json_text, source);
  const Keys keys(root, source);
  ModelConfig config;
  config.architecture = first_architecture(keys);
  try {
    config.arch = find_arch_spec(config.architecture);
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(source + ": " + e.what());
  }
  const ArchSpec& spec = config.arch;

  detail::LayerSettings settings;
  settings.mla = parse_dimensions(keys, config);
  if (spec.attention.clip_qkv && keys.has("clip_qkv")) {
    config.clip_qkv = keys.number("clip_qkv");
    GPTQ_CHECK(config.clip_qkv > 0, source, ": key 'clip_qkv' must be positive or null");
  }
  settings.activation = detail::parse_activation(keys, spec);
  detail::parse_rope(root, keys, spec, config);
  GPTQ_CHECK_SUPPORTED(!keys.boolean_or("use_bidirectional_attention", false), source,
                       ": use_bidirectional_attention (an encoder) is not supported");
  settings.query_scalar = keys.optional_positive(spec.attention.query_scale_key);
  settings.attention_softcap = keys.optional_positive(spec.attention.softcap_key);
  config.final_logit_softcap = keys.optional_positive(spec.final_softcap_key);
  config.tie_word_embeddings = keys.boolean_or("tie_word_embeddings", spec.tie_word_embeddings_default);
  config.layers = detail::build_layer_specs(root, keys, config, settings);
  parse_metadata(root, keys, config);
  return config;
}

ModelConfig load_model_config(const std::filesystem::path& dir) {
  // A folder (or a path that is not a .json file) means <folder>/config.json.
  std::filesystem::path path = dir.extension() == ".json" && !std::filesystem::is_directory(dir)
                                   ? dir
                                   : dir / "config.json";
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in.good(), "cannot read '", path.string(), "': ",
             std::filesystem::exists(path) ? "permission denied" : "no such file");
  std::stringstream text;
  text << in.rdbuf();
  ModelConfig config = parse_model_config(text.str(), path.string());
  config.dir = path.parent_path();
  return config;
}

}  // namespace gptq::model
