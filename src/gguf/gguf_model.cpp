#include "gptq/gguf/gguf_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <numbers>
#include <optional>

#include "gptq/core/error.h"
#include "gptq/core/interrupt.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/gguf/gguf_file.h"
#include "gptq/gguf/gguf_vocab.h"
#include "hf_json.h"

namespace gptq::gguf {
namespace fs = std::filesystem;

namespace {

struct FileTypeName {
  const char* name;
  GgufFileType type;
  GgmlType tensor_type;
};

constexpr std::array<FileTypeName, 13> kFileTypes = {{
    {"q4_0", GgufFileType::kQ4_0, GgmlType::kQ4_0},
    {"q4_1", GgufFileType::kQ4_1, GgmlType::kQ4_1},
    {"q8_0", GgufFileType::kQ8_0, GgmlType::kQ8_0},
    {"q4_k", GgufFileType::kQ4_K_S, GgmlType::kQ4_K},
    {"q4_k_s", GgufFileType::kQ4_K_S, GgmlType::kQ4_K},
    {"q5_k", GgufFileType::kQ5_K_S, GgmlType::kQ5_K},
    {"q5_k_s", GgufFileType::kQ5_K_S, GgmlType::kQ5_K},
    {"q6_k", GgufFileType::kQ6_K, GgmlType::kQ6_K},
    {"q4_k_m", GgufFileType::kQ4_K_M, GgmlType::kQ4_K},
    {"q5_k_m", GgufFileType::kQ5_K_M, GgmlType::kQ5_K},
    {"f16", GgufFileType::kF16, GgmlType::kF16},
    {"bf16", GgufFileType::kBF16, GgmlType::kBF16},
    {"f32", GgufFileType::kF32, GgmlType::kF32},
}};

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// HF suffix within a decoder layer -> GGUF suffix within blk.N.
const std::map<std::string, std::string>& layer_names() {
  static const std::map<std::string, std::string> names = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.o_proj.bias", "attn_output.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.gate_proj.bias", "ffn_gate.bias"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.up_proj.bias", "ffn_up.bias"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
      {"mlp.down_proj.bias", "ffn_down.bias"},
  };
  return names;
}

// (GGUF name, layer) of an HF tensor; nullopt for one the converter skips.
std::optional<std::pair<std::string, int>> gguf_name_of(const std::string& hf_name, const model::ModelConfig& config) {
  if (hf_name == "model.embed_tokens.weight") return std::pair<std::string, int>{"token_embd.weight", -1};
  if (hf_name == "model.norm.weight") return std::pair<std::string, int>{"output_norm.weight", -1};
  if (hf_name == "lm_head.weight") return std::pair<std::string, int>{"output.weight", -1};
  if (hf_name.ends_with(".rotary_emb.inv_freq")) return std::nullopt;
  const std::string prefix = "model.layers.";
  if (hf_name.starts_with(prefix)) {
    const size_t dot = hf_name.find('.', prefix.size());
    const std::string index = hf_name.substr(prefix.size(), dot - prefix.size());
    if (dot != std::string::npos && !index.empty() && std::all_of(index.begin(), index.end(), ::isdigit)) {
      const int layer = std::stoi(index);
      const auto found = layer_names().find(hf_name.substr(dot + 1));
      if (found != layer_names().end() && layer < config.n_layers) {
        return std::pair<std::string, int>{"blk." + index + "." + found->second, layer};
      }
    }
  }
  throw UnsupportedError("tensor '" + hf_name + "' has no GGUF name in the " + gguf_architecture(config) +
                         " mapping (convert_hf_to_gguf would not know it either)");
}

// llama-quantize's use_more_bits.
bool use_more_bits(int64_t index, int64_t count) {
  return index < count / 8 || index >= 7 * count / 8 || (index - count / 8) % 3 == 2;
}

// The type llama-quantize gives a 2-D tensor that does not fit `type`'s blocks.
GgmlType fallback(GgmlType type, int64_t n_cols, const std::string& name) {
  if (n_cols % type_info(type).block_size == 0) return type;
  GgmlType result = type;
  if (type == GgmlType::kQ6_K) result = GgmlType::kQ8_0;
  if (type == GgmlType::kQ4_K || type == GgmlType::kQ5_K) {
    throw UnsupportedError("tensor '" + name + "' has rows of " + std::to_string(n_cols) +
                           " values, not whole 256-value super-blocks: llama-quantize stores it as " +
                           (type == GgmlType::kQ4_K ? "Q5_0" : "Q5_1") +
                           ", a type gptq-quant does not write yet; use --gguf-type q4_0, q4_1 or q8_0");
  }
  if (n_cols % type_info(result).block_size != 0) result = GgmlType::kF16;
  return result;
}

// Llama-3 RoPE's per-frequency factors, as convert_hf_to_gguf computes them.
at::Tensor llama3_rope_factors(const model::ModelConfig& config) {
  const model::RopeConfig& rope = config.rope;
  const int64_t dim = config.head_dim;
  const double old_context = rope.original_max_position_embeddings > 0 ? double(rope.original_max_position_embeddings) : 8192.0;
  const double low_wavelen = old_context / rope.low_freq_factor;
  const double high_wavelen = old_context / rope.high_freq_factor;
  at::Tensor freqs = 1.0 / at::pow(at::scalar_tensor(rope.theta, at::kFloat),
                                   at::arange(0, dim, 2, at::kFloat) / static_cast<float>(dim));
  at::Tensor factors = at::empty({freqs.size(0)}, at::kFloat);
  for (int64_t index = 0; index < freqs.size(0); ++index) {
    const double wavelen = 2 * std::numbers::pi / freqs[index].item<float>();
    double factor;
    if (wavelen < high_wavelen) {
      factor = 1;
    } else if (wavelen > low_wavelen) {
      factor = rope.factor;
    } else {
      const double smooth = (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
      factor = 1 / ((1 - smooth) / rope.factor + smooth);
    }
    factors[index] = factor;
  }
  return factors;
}

// config.json's RoPE parameters as the converter reads them: "rope_parameters"
// (transformers 5) or "rope_scaling", the full-attention entry where split.
nlohmann::json rope_parameters_json(const nlohmann::json& hparams) {
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!hparams.contains(key) || !hparams[key].is_object()) continue;
    const nlohmann::json& params = hparams[key];
    return params.contains("full_attention") ? params["full_attention"] : params;
  }
  return nlohmann::json::object();
}

void write_vocab(GgufFileWriter& writer, const GgufVocab& vocab) {
  writer.set_string("tokenizer.ggml.model", vocab.model);
  if (!vocab.pre.empty()) writer.set_string("tokenizer.ggml.pre", vocab.pre);
  writer.set_strings("tokenizer.ggml.tokens", vocab.tokens);
  if (!vocab.scores.empty()) writer.set_f32s("tokenizer.ggml.scores", vocab.scores);
  writer.set_i32s("tokenizer.ggml.token_type", vocab.token_types);
  if (!vocab.merges.empty()) writer.set_strings("tokenizer.ggml.merges", vocab.merges);
  const auto put_id = [&](const char* key, const std::optional<uint32_t>& id) {
    if (id) writer.set_u32(key, *id);
  };
  const auto put_bool = [&](const char* key, const std::optional<bool>& value) {
    if (value) writer.set_bool(key, *value);
  };
  put_id("tokenizer.ggml.bos_token_id", vocab.bos_id);
  put_id("tokenizer.ggml.eos_token_id", vocab.eos_id);
  put_id("tokenizer.ggml.unknown_token_id", vocab.unk_id);
  put_id("tokenizer.ggml.seperator_token_id", vocab.sep_id);  // sic: gguf-py's key
  put_id("tokenizer.ggml.padding_token_id", vocab.pad_id);
  put_id("tokenizer.ggml.mask_token_id", vocab.mask_id);
  put_id("tokenizer.ggml.eot_token_id", vocab.eot_id);
  put_id("tokenizer.ggml.eom_token_id", vocab.eom_id);
  put_bool("tokenizer.ggml.add_bos_token", vocab.add_bos);
  put_bool("tokenizer.ggml.add_sep_token", vocab.add_sep);
  put_bool("tokenizer.ggml.add_eos_token", vocab.add_eos);
  put_bool("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix);
  put_bool("tokenizer.ggml.normalizer.lowercase", vocab.normalizer_lowercase);
  put_bool("tokenizer.ggml.normalizer.strip_accents", vocab.normalizer_strip_accents);
  if (vocab.chat_template) writer.set_string("tokenizer.chat_template", *vocab.chat_template);
  if (!vocab.named_chat_templates.empty()) {
    std::vector<std::string> names;
    for (const auto& [name, text] : vocab.named_chat_templates) {
      writer.set_string("tokenizer.chat_template." + name, text);
      names.push_back(name);
    }
    writer.set_strings("tokenizer.chat_templates", names);
  }
}

}  // namespace

GgufFileType parse_gguf_file_type(const std::string& name) {
  const std::string wanted = lower(name);
  for (const auto& entry : kFileTypes) {
    if (wanted == entry.name) return entry.type;
  }
  std::string known;
  for (const auto& entry : kFileTypes) known += (known.empty() ? "" : ", ") + std::string(entry.name);
  throw InputError("unknown GGUF file type '" + name + "' (known: " + known + ")");
}

std::string gguf_file_type_name(GgufFileType type) {
  for (const auto& entry : kFileTypes) {
    if (entry.type == type) return entry.name;
  }
  GPTQ_ASSERT(false, "file type ", static_cast<uint32_t>(type), " has no name");
  return "";
}

GgmlType default_tensor_type(GgufFileType type) {
  for (const auto& entry : kFileTypes) {
    if (entry.type == type) return entry.tensor_type;
  }
  GPTQ_ASSERT(false, "file type ", static_cast<uint32_t>(type), " has no tensor type");
  return GgmlType::kF32;
}

std::string gguf_architecture(const model::ModelConfig& config) {
  if (config.architecture == "LlamaForCausalLM" || config.architecture == "MistralForCausalLM") return "llama";
  if (config.architecture == "Qwen2ForCausalLM") return "qwen2";
  if (config.architecture == "Qwen3ForCausalLM") return "qwen3";
  throw UnsupportedError("'" + (config.dir / "config.json").string() + "': architecture " + config.architecture +
                         " has no GGUF mapping in gptq-quant (supported: LlamaForCausalLM, MistralForCausalLM, "
                         "Qwen2ForCausalLM, Qwen3ForCausalLM)");
}

const GgufTensorPlan* GgufModelPlan::find(const std::string& hf_name) const {
  for (const auto& tensor : tensors) {
    if (tensor.hf_name == hf_name) return &tensor;
  }
  return nullptr;
}

std::vector<SourceTensor> source_tensors(const io::Checkpoint& checkpoint) {
  // The converter's order: shard by shard, each shard's tensors by name.
  std::vector<SourceTensor> tensors;
  for (const auto& file : checkpoint.files()) {
    std::vector<SourceTensor> shard;
    for (const auto& tensor : file->tensors()) shard.push_back({tensor.name, tensor.shape});
    std::sort(shard.begin(), shard.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    tensors.insert(tensors.end(), shard.begin(), shard.end());
  }
  return tensors;
}

GgufModelPlan plan_gguf_model(const model::ModelConfig& config, const std::vector<SourceTensor>& sources,
                              GgufFileType file_type) {
  GgufModelPlan plan;
  plan.architecture = gguf_architecture(config);
  plan.file_type = file_type;
  if (config.rope.type == model::RopeType::kLlama3) {
    plan.rope_freqs = llama3_rope_factors(config);
    plan.tensors.push_back({"", "rope_freqs.weight", {plan.rope_freqs.size(0)}, GgmlType::kF32, 0});
  }
  std::vector<std::string> order;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& source : sources) {
    order.push_back(source.name);
    shapes[source.name] = source.shape;
  }
  const bool has_output = std::find(order.begin(), order.end(), "lm_head.weight") != order.end();
  const GgmlType base = default_tensor_type(file_type);
  const bool quantized = type_info(base).quantized;
  // llama-quantize walks tensors by layer number (llama_model_loader's
  // weights_map, ordered by weight_name_comparer), not in file order, so its
  // attn_v counter is the rank of the layer among the layers holding one;
  // ffn_down's counts every layer.
  std::vector<int> attn_v_layers;
  for (const auto& name : order) {
    if (!name.ends_with("self_attn.v_proj.weight")) continue;
    if (const auto named = gguf_name_of(name, config)) attn_v_layers.push_back(named->second);
  }
  std::sort(attn_v_layers.begin(), attn_v_layers.end());
  const int64_t n_attention_wv = static_cast<int64_t>(attn_v_layers.size());
  const int64_t n_ffn_down = config.n_layers;
  // llama.cpp's LLM_TYPE_70B, which llama-quantize reads from the loaded
  // model: llama with 80 layers and grouped KV heads (Llama-2/3-70B), qwen2
  // with 80 layers (Qwen2/2.5-72B); qwen3 has no 80-layer size.
  const bool type_70b = config.n_layers == 80 && ((plan.architecture == "llama" && config.n_heads != config.n_kv_heads) ||
                                                  plan.architecture == "qwen2");
  for (const auto& hf_name : order) {
    const auto named = gguf_name_of(hf_name, config);
    if (!named) continue;
    GgufTensorPlan tensor;
    tensor.hf_name = hf_name;
    tensor.name = named->first;
    tensor.shape = shapes.at(hf_name);
    if (plan.architecture == "llama" && hf_name.find("self_attn.q_proj.") != std::string::npos) {
      tensor.permute_heads = config.n_heads;
    } else if (plan.architecture == "llama" && hf_name.find("self_attn.k_proj.") != std::string::npos) {
      tensor.permute_heads = config.n_kv_heads;
    }
    if (tensor.shape.size() != 2) {
      tensor.type = GgmlType::kF32;  // norms and biases stay F32 in every file type
      plan.tensors.push_back(tensor);
      continue;
    }
    GgmlType type = base;
    const int64_t n_cols = tensor.shape[1];
    const bool output = tensor.name == "output.weight" || (!has_output && tensor.name == "token_embd.weight");
    if (quantized && output) {
      if (n_cols % type_info(base).block_size != 0) {
        type = GgmlType::kQ8_0;
      } else if (base != GgmlType::kQ8_0) {
        type = GgmlType::kQ6_K;
      }
    } else if (quantized && tensor.name.ends_with("attn_v.weight")) {
      const int64_t i_attention_wv =
          std::lower_bound(attn_v_layers.begin(), attn_v_layers.end(), named->second) - attn_v_layers.begin();
      if ((file_type == GgufFileType::kQ4_K_M || file_type == GgufFileType::kQ5_K_M) &&
          use_more_bits(i_attention_wv, n_attention_wv)) {
        type = GgmlType::kQ6_K;
      } else if (file_type == GgufFileType::kQ4_K_S && i_attention_wv < 4) {
        type = GgmlType::kQ5_K;
      }
      if (type_70b && type == GgmlType::kQ4_K) type = GgmlType::kQ5_K;
    } else if (quantized && tensor.name.ends_with("ffn_down.weight")) {
      const int64_t i_ffn_down = named->second;
      if ((file_type == GgufFileType::kQ4_K_M || file_type == GgufFileType::kQ5_K_M) &&
          use_more_bits(i_ffn_down, n_ffn_down)) {
        type = GgmlType::kQ6_K;
      } else if (file_type == GgufFileType::kQ4_K_S && i_ffn_down < n_ffn_down / 8) {
        type = GgmlType::kQ5_K;
      }
    }
    tensor.type = quantized ? fallback(type, n_cols, tensor.name) : type;
    plan.tensors.push_back(tensor);
  }
  return plan;
}

GgufModelPlan plan_gguf_model(const model::ModelConfig& config, const io::Checkpoint& checkpoint,
                              GgufFileType file_type) {
  return plan_gguf_model(config, source_tensors(checkpoint), file_type);
}

at::Tensor permute_rows_for_rope(const at::Tensor& rows, int64_t n_heads) {
  const int64_t n_rows = rows.size(0);
  GPTQ_CHECK(n_heads > 0 && n_rows % (2 * n_heads) == 0, "cannot permute ", n_rows, " rows for ", n_heads,
             " rope heads");
  const at::Tensor index =
      at::arange(n_rows, at::kLong).reshape({n_heads, 2, n_rows / n_heads / 2}).transpose(1, 2).reshape({n_rows});
  return rows.index_select(0, index.to(rows.device()));
}

void write_gguf_metadata(GgufFileWriter& writer, const model::ModelConfig& config, const GgufModelPlan& plan) {
  const nlohmann::json hparams = read_json_file(config.dir / "config.json");
  const std::string& arch = plan.architecture;
  writer.set_string("general.architecture", arch);
  writer.set_string("general.type", "model");
  writer.set_string("general.name", config.dir.filename().empty() ? config.dir.parent_path().filename().string()
                                                                  : config.dir.filename().string());
  writer.set_u32(arch + ".block_count", static_cast<uint32_t>(config.n_layers));
  if (config.max_position_embeddings > 0) {
    writer.set_u32(arch + ".context_length", static_cast<uint32_t>(config.max_position_embeddings));
  }
  writer.set_u32(arch + ".embedding_length", static_cast<uint32_t>(config.hidden_size));
  writer.set_u32(arch + ".feed_forward_length", static_cast<uint32_t>(config.intermediate_size));
  writer.set_u32(arch + ".attention.head_count", static_cast<uint32_t>(config.n_heads));
  writer.set_u32(arch + ".attention.head_count_kv", static_cast<uint32_t>(config.n_kv_heads));
  const model::RopeConfig& rope = config.rope;
  if (rope.type == model::RopeType::kLinear) {
    writer.set_string(arch + ".rope.scaling.type", "linear");
    writer.set_f32(arch + ".rope.scaling.factor", static_cast<float>(rope.factor));
  } else if (rope.type == model::RopeType::kYarn) {
    writer.set_string(arch + ".rope.scaling.type", "yarn");
    writer.set_f32(arch + ".rope.scaling.factor", static_cast<float>(rope.factor));
    writer.set_u32(arch + ".rope.scaling.original_context_length",
                   static_cast<uint32_t>(rope.original_max_position_embeddings));
    // The converter writes these only when config.json gives them (llama.cpp
    // then applies its own defaults), so they come from the file, not from
    // ModelConfig's filled-in values.
    const nlohmann::json params = rope_parameters_json(hparams);
    const auto put_given = [&](std::initializer_list<const char*> names, const std::string& key) {
      for (const char* name : names) {
        if (params.contains(name) && params[name].is_number()) {
          writer.set_f32(arch + key, params[name].get<float>());
          return;
        }
      }
    };
    put_given({"extrapolation_factor"}, ".rope.scaling.yarn_ext_factor");
    put_given({"attention_factor", "attn_factor"}, ".rope.scaling.yarn_attn_factor");
    put_given({"beta_fast"}, ".rope.scaling.yarn_beta_fast");
    put_given({"beta_slow"}, ".rope.scaling.yarn_beta_slow");
  }
  writer.set_f32(arch + ".rope.freq_base", static_cast<float>(rope.theta));
  writer.set_f32(arch + ".attention.layer_norm_rms_epsilon", static_cast<float>(config.rms_norm_eps));
  if (hparams.contains("head_dim") && hparams["head_dim"].is_number_integer()) {
    writer.set_u32(arch + ".attention.key_length", static_cast<uint32_t>(config.head_dim));
    writer.set_u32(arch + ".attention.value_length", static_cast<uint32_t>(config.head_dim));
  }
  writer.set_u32("general.file_type", static_cast<uint32_t>(plan.file_type));
  if (arch == "llama") {
    writer.set_u32("llama.vocab_size", static_cast<uint32_t>(config.vocab_size));
    writer.set_u32("llama.rope.dimension_count", static_cast<uint32_t>(config.head_dim));
  }
  writer.set_u32("general.quantization_version", 2);
  write_vocab(writer, read_gguf_vocab(config.dir, config.vocab_size));
}

uint64_t write_gguf_model(const fs::path& output, const model::ModelConfig& config, const GgufModelPlan& plan,
                          const io::Checkpoint& checkpoint, const EncodedRows& encoded) {
  GgufFileWriter writer(output);
  write_gguf_metadata(writer, config, plan);
  for (const auto& tensor : plan.tensors) {
    throw_if_interrupted("the assembly of '" + output.string() + "'");
    // The rope permutation moves whole rows: of blocks once encoded, of values
    // otherwise. A 1-D tensor (a Q/K bias, always F32) is one row whose
    // elements move, so its bytes are permuted as [n, element bytes].
    auto permuted = [&](const at::Tensor& rows) {
      if (tensor.permute_heads <= 0) return rows;
      if (tensor.shape.size() == 1 && rows.dim() == 2) {
        return permute_rows_for_rope(rows.reshape({tensor.shape[0], -1}), tensor.permute_heads).reshape({1, -1});
      }
      return permute_rows_for_rope(rows, tensor.permute_heads);
    };
    at::Tensor bytes = tensor.hf_name.empty() ? at::Tensor() : encoded(tensor);
    if (bytes.defined()) {
      GPTQ_ASSERT(bytes.scalar_type() == at::kByte && bytes.dim() == 2 &&
                      bytes.size(1) == row_bytes(tensor.type, tensor.shape.back()),
                  tensor.hf_name, ": the encoded rows are not ", type_info(tensor.type).name, " rows");
      bytes = permuted(bytes);
    } else {
      at::Tensor values = tensor.hf_name.empty() ? plan.rope_freqs
                                                  : permuted(checkpoint.load(tensor.hf_name, at::kFloat));
      if (values.dim() == 1) values = values.unsqueeze(0);
      bytes = quantize_rows(tensor.type, values, at::Tensor());
    }
    writer.add_tensor(tensor.name, tensor.type, tensor.shape, bytes);
  }
  return writer.commit();
}

}  // namespace gptq::gguf
