// CheckpointWeightSource and the per-block / head loaders with shape checks.
#include "gptq/model/weights.h"

#include <ATen/ATen.h>

#include <optional>

#include "gptq/core/error.h"
#include "gptq/io/safetensors.h"

namespace gptq::model {
namespace {

std::string shape_string(c10::IntArrayRef shape) {
  std::string out = "[";
  for (size_t dim = 0; dim < shape.size(); ++dim) out += (dim ? ", " : "") + std::to_string(shape[dim]);
  return out + "]";
}

at::Tensor load_checked(const WeightSource& source, const std::string& name,
                        std::vector<int64_t> expected, c10::ScalarType dtype, c10::Device device) {
  GPTQ_CHECK(source.contains(name), source.describe(), ": tensor '", name, "' is missing");
  at::Tensor tensor = source.tensor(name, dtype, device);
  GPTQ_CHECK(tensor.sizes() == c10::IntArrayRef(expected), source.describe(), ": tensor '", name,
             "' has shape ", shape_string(tensor.sizes()), ", config.json implies ",
             shape_string(expected));
  // Checked in the compute dtype: a value the conversion overflowed is as unusable as a stored NaN.
  GPTQ_CHECK(at::isfinite(tensor).all().item<bool>(), source.describe(), ": tensor '", name,
             "' holds NaN or Inf values", tensor.scalar_type() == at::kHalf ? " (in fp16: try --dtype bf16)" : "");
  return tensor;
}

// [out, in] of each linear of the layer, by the role its spec gives it.
std::vector<int64_t> linear_shape(const ModelConfig& config, const LayerSpec& layer,
                                  const std::string& linear) {
  const int64_t q_out = config.n_heads * config.head_dim;
  const int64_t kv_out = config.n_kv_heads * config.head_dim;
  const AttentionSpec& attention = layer.attention;
  const MlpSpec& mlp = layer.mlp;
  if (attention.kind == AttentionKind::kMla) {
    const MlaShape& shape = layer.mla;
    const MlaSpec& mla = attention.mla;
    const int64_t heads = config.n_heads;
    if (linear == attention.q_proj) return {heads * shape.qk_head_dim(), config.hidden_size};
    if (linear == mla.q_a_proj) return {shape.q_lora_rank, config.hidden_size};
    if (linear == mla.q_b_proj) return {heads * shape.qk_head_dim(), shape.q_lora_rank};
    if (linear == mla.kv_a_proj) return {shape.kv_lora_rank + shape.qk_rope_head_dim, config.hidden_size};
    if (linear == mla.kv_b_proj) return {heads * (shape.qk_nope_head_dim + shape.v_head_dim), shape.kv_lora_rank};
    if (linear == attention.o_proj) return {config.hidden_size, heads * shape.v_head_dim};
  }
  if (!attention.qkv_proj.empty() && linear == attention.qkv_proj) return {q_out + 2 * kv_out, config.hidden_size};
  if (!mlp.gate_up_proj.empty() && linear == mlp.gate_up_proj) {
    return {2 * layer.intermediate_size, config.hidden_size};
  }
  if (linear == attention.q_proj) return {q_out, config.hidden_size};
  if (linear == attention.k_proj || linear == attention.v_proj) return {kv_out, config.hidden_size};
  if (linear == attention.o_proj) return {config.hidden_size, q_out};
  if (linear == mlp.gate_proj || linear == mlp.up_proj) return {layer.intermediate_size, config.hidden_size};
  if (linear == mlp.down_proj) return {config.hidden_size, layer.intermediate_size};
  if (layer.is_moe()) {
    const MoeSpec& moe = layer.moe;
    auto role_width = [&](const std::string& name, int64_t width) -> std::vector<int64_t> {
      if (name.ends_with("." + moe.gate) || name.ends_with("." + moe.up)) return {width, config.hidden_size};
      if (name.ends_with("." + moe.down)) return {config.hidden_size, width};
      return {};
    };
    if (linear.starts_with(moe.experts)) {
      if (auto shape = role_width(linear, layer.expert_intermediate_size); !shape.empty()) return shape;
    }
    if (layer.shared_intermediate_size > 0 && linear.starts_with(moe.shared_prefix)) {
      if (auto shape = role_width(linear, layer.shared_intermediate_size); !shape.empty()) return shape;
    }
  }
  GPTQ_ASSERT(false, "no shape rule for linear '", linear, "'");
  return {};
}

}  // namespace

CheckpointWeightSource::CheckpointWeightSource(const std::filesystem::path& dir)
    : dir_(dir), checkpoint_(std::make_unique<io::Checkpoint>(io::Checkpoint::open(dir))) {}

CheckpointWeightSource::~CheckpointWeightSource() = default;

at::Tensor CheckpointWeightSource::tensor(const std::string& full_name, c10::ScalarType dtype,
                                          c10::Device device) const {
  GPTQ_CHECK(checkpoint_->contains(full_name), describe(), ": tensor '", full_name, "' is missing");
  return checkpoint_->load(full_name, dtype, device);
}

bool CheckpointWeightSource::contains(const std::string& full_name) const {
  return checkpoint_->contains(full_name);
}

std::string CheckpointWeightSource::describe() const {
  size_t n_files = checkpoint_->files().size();
  return "'" + dir_.string() + "'" + (n_files > 1 ? " (" + std::to_string(n_files) + " shards)" : "");
}

const at::Tensor& BlockWeights::at(const std::string& name) const {
  auto found = tensors.find(name);
  GPTQ_CHECK(found != tensors.end(), "block has no tensor '", name, "'");
  return found->second;
}

const at::Tensor* BlockWeights::find(const std::string& name) const {
  auto found = tensors.find(name);
  return found == tensors.end() ? nullptr : &found->second;
}

int64_t BlockWeights::nbytes() const {
  int64_t total = 0;
  for (const auto& [name, tensor] : tensors) total += tensor.nbytes();
  return total;
}

std::vector<int64_t> linear_shape(const ModelConfig& config, int layer, const std::string& linear) {
  return linear_shape(config, config.layer(layer), linear);
}

BlockWeights load_block(const WeightSource& source, const ModelConfig& config, int layer,
                        c10::ScalarType dtype, c10::Device device) {
  GPTQ_CHECK(layer >= 0 && layer < config.n_layers, "layer ", layer, " out of range [0, ",
             config.n_layers, ")");
  const LayerSpec& spec = config.layer(layer);
  const std::string prefix = config.layer_prefix(layer);
  BlockWeights block;
  block.layer = layer;
  auto add = [&](const std::string& relative, std::vector<int64_t> shape,
                 std::optional<c10::ScalarType> own_dtype = std::nullopt) {
    block.tensors[relative] = load_checked(source, prefix + relative, std::move(shape), own_dtype.value_or(dtype),
                                           device);
  };
  add(spec.input_norm.name + ".weight", {config.hidden_size});
  add(spec.post_attention_norm.name + ".weight", {config.hidden_size});
  for (const NormSpec* output_norm : {&spec.attention_output_norm, &spec.mlp_output_norm}) {
    if (output_norm->present()) add(output_norm->name + ".weight", {config.hidden_size});
  }
  switch (spec.attention.qk_norm) {
    case QkNorm::kNone: break;
    case QkNorm::kPerHead:
      add(spec.attention.q_norm.name + ".weight", {config.head_dim});
      add(spec.attention.k_norm.name + ".weight", {config.head_dim});
      break;
    case QkNorm::kWholeProjection:
      add(spec.attention.q_norm.name + ".weight", {config.n_heads * config.head_dim});
      add(spec.attention.k_norm.name + ".weight", {config.n_kv_heads * config.head_dim});
      break;
  }
  if (spec.attention.kind == AttentionKind::kMla) {
    const MlaSpec& mla = spec.attention.mla;
    if (spec.mla.q_lora_rank > 0) add(mla.q_a_norm.name + ".weight", {spec.mla.q_lora_rank});
    add(mla.kv_a_norm.name + ".weight", {spec.mla.kv_lora_rank});
  }
  if (spec.is_moe()) {
    // transformers keeps DeepSeek's router and its bias in fp32 whatever the model's dtype.
    const bool fp32_router = spec.moe.router_kind == RouterKind::kSigmoidGroupLimited;
    const std::optional<c10::ScalarType> router_dtype =
        fp32_router ? std::optional<c10::ScalarType>(c10::kFloat) : std::nullopt;
    add(spec.moe.router + ".weight", {spec.n_experts, config.hidden_size}, router_dtype);
    if (fp32_router) add(spec.moe.router_bias, {spec.n_experts}, router_dtype);
    if (spec.shared_intermediate_size > 0 && !spec.moe.shared_gate.empty()) {
      add(spec.moe.shared_gate + ".weight", {1, config.hidden_size});
    }
  }
  for (const auto& linear : spec.linear_names()) {
    std::vector<int64_t> shape = linear_shape(config, spec, linear);
    add(linear + ".weight", shape);
    if (spec.has_bias(linear)) add(linear + ".bias", {shape[0]});
  }
  return block;
}

at::Tensor load_embedding(const WeightSource& source, const ModelConfig& config,
                          c10::ScalarType dtype, c10::Device device) {
  return load_checked(source, config.arch.embed_tokens, {config.vocab_size, config.hidden_size}, dtype,
                      device);
}

std::string lm_head_tensor_name(const WeightSource& source, const ModelConfig& config) {
  if (config.tie_word_embeddings || !source.contains(config.arch.lm_head)) return config.arch.embed_tokens;
  return config.arch.lm_head;
}

HeadWeights load_head(const WeightSource& source, const ModelConfig& config, c10::ScalarType dtype,
                      c10::Device device) {
  HeadWeights head;
  head.final_norm = load_checked(source, config.arch.final_norm, {config.hidden_size}, dtype, device);
  head.lm_head = load_checked(source, lm_head_tensor_name(source, config),
                              {config.vocab_size, config.hidden_size}, dtype, device);
  return head;
}

}  // namespace gptq::model
