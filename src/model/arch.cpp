// The table of supported families. Adding a Llama-like family is one row.
#include "gptq/model/arch.h"

#include "gptq/core/error.h"

namespace gptq::model {
namespace {

const std::vector<std::vector<std::string>> kLlamaGroups = {
    {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"},
    {"self_attn.o_proj"},
    {"mlp.gate_proj", "mlp.up_proj"},
    {"mlp.down_proj"},
};

ArchSpec make_spec(std::string architecture) {
  ArchSpec spec;
  spec.architecture = std::move(architecture);
  spec.sequential_groups = kLlamaGroups;
  return spec;
}

std::vector<ArchSpec> build_table() {
  using Kind = BiasRule::Kind;
  std::vector<ArchSpec> table;

  ArchSpec llama = make_spec("LlamaForCausalLM");
  llama.qkv_bias = {Kind::kConfigKey, "attention_bias", false};
  llama.o_bias = {Kind::kConfigKey, "attention_bias", false};
  llama.mlp_bias = {Kind::kConfigKey, "mlp_bias", false};
  table.push_back(llama);

  ArchSpec mistral = make_spec("MistralForCausalLM");
  mistral.sliding_window = SlidingWindowRule::kAllLayers;
  table.push_back(mistral);

  ArchSpec qwen2 = make_spec("Qwen2ForCausalLM");
  qwen2.qkv_bias = {Kind::kAlways, "", true};
  qwen2.sliding_window = SlidingWindowRule::kLayerTypes;
  table.push_back(qwen2);

  ArchSpec qwen3 = make_spec("Qwen3ForCausalLM");
  qwen3.qkv_bias = {Kind::kConfigKey, "attention_bias", false};
  qwen3.o_bias = {Kind::kConfigKey, "attention_bias", false};
  qwen3.qk_norm = true;
  qwen3.sliding_window = SlidingWindowRule::kLayerTypes;
  table.push_back(qwen3);

  return table;
}

const std::vector<ArchSpec>& table() {
  static const std::vector<ArchSpec> kTable = build_table();
  return kTable;
}

}  // namespace

std::vector<std::string> ArchSpec::linear_names() const {
  std::vector<std::string> names;
  for (const auto& group : sequential_groups) names.insert(names.end(), group.begin(), group.end());
  return names;
}

const ArchSpec& find_arch_spec(const std::string& architecture) {
  for (const auto& spec : table()) {
    if (spec.architecture == architecture) return spec;
  }
  std::string supported;
  for (const auto& name : supported_architectures()) supported += (supported.empty() ? "" : ", ") + name;
  throw UnsupportedError("architecture '" + architecture + "' is not supported (supported: " +
                         supported + ")");
}

std::vector<std::string> supported_architectures() {
  std::vector<std::string> names;
  for (const auto& spec : table()) names.push_back(spec.architecture);
  return names;
}

}  // namespace gptq::model
