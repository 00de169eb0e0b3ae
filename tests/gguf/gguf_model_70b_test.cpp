// llama-quantize's 70B rule (src/llama-quant.cpp: attn_v that the mix would
// store as Q4_K becomes Q5_K when the loaded model's type is LLM_TYPE_70B).
// llama.cpp sizes a model by its family's own table (src/models/llama.cpp:
// 80 layers with n_head != n_head_kv; src/models/qwen2.cpp: 80 layers; qwen3
// has no 80-layer entry), so the plan must decide it per architecture. Checked
// on the plan of an 80-layer tensor list (shapes only, no files).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "gptq/gguf/gguf_model.h"
#include "gptq/model/config.h"

namespace gptq::gguf {
namespace {

constexpr int64_t kLayers = 80, kHidden = 256, kHeads = 8;

model::ModelConfig config_of(const std::string& arch, int64_t n_kv_heads) {
  const nlohmann::json json = {{"architectures", {arch}}, {"hidden_size", kHidden}, {"intermediate_size", 512},
                               {"num_hidden_layers", kLayers}, {"num_attention_heads", kHeads},
                               {"num_key_value_heads", n_kv_heads}, {"vocab_size", 512},
                               {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 2048}};
  return model::parse_model_config(json.dump(), "/m/config.json");
}

std::vector<SourceTensor> v_projs(int64_t n_kv_heads) {
  const int64_t kv_rows = n_kv_heads * (kHidden / kHeads);
  std::vector<SourceTensor> tensors;
  for (int64_t layer = 0; layer < kLayers; ++layer) {
    tensors.push_back({"model.layers." + std::to_string(layer) + ".self_attn.v_proj.weight", {kv_rows, kHidden}});
  }
  return tensors;
}

// attn_v types by layer.
std::vector<GgmlType> attn_v_types(const std::string& arch, int64_t n_kv_heads, GgufFileType file_type) {
  const GgufModelPlan plan = plan_gguf_model(config_of(arch, n_kv_heads), v_projs(n_kv_heads), file_type);
  std::vector<GgmlType> types;
  for (const auto& tensor : plan.tensors) types.push_back(tensor.type);
  return types;
}

TEST(GgufType70B, LlamaWithGqaAndQwen2GetQ5KWhereTheMixSaysQ4K) {
  for (const auto& [arch, n_kv_heads] : {std::pair<std::string, int64_t>{"LlamaForCausalLM", 2},
                                         {"MistralForCausalLM", 2}, {"Qwen2ForCausalLM", 2},
                                         {"Qwen2ForCausalLM", kHeads}}) {
    SCOPED_TRACE(arch + " kv heads " + std::to_string(n_kv_heads));
    // q4_k_m: use_more_bits(i, 80) layers Q6_K (0-9, 70-79, every third in
    // between from 12), the rest Q5_K instead of Q4_K.
    const auto m = attn_v_types(arch, n_kv_heads, GgufFileType::kQ4_K_M);
    ASSERT_EQ(m.size(), 80u);
    EXPECT_EQ(m[0], GgmlType::kQ6_K);
    EXPECT_EQ(m[9], GgmlType::kQ6_K);
    EXPECT_EQ(m[10], GgmlType::kQ5_K);
    EXPECT_EQ(m[11], GgmlType::kQ5_K);
    EXPECT_EQ(m[12], GgmlType::kQ6_K);
    EXPECT_EQ(m[69], GgmlType::kQ6_K);  // (69 - 10) % 3 == 2
    EXPECT_EQ(m[68], GgmlType::kQ5_K);
    EXPECT_EQ(m[70], GgmlType::kQ6_K);
    // q4_k (Q4_K_S): Q5_K everywhere (the first 4 by their own rule, the rest by 70B).
    for (const GgmlType type : attn_v_types(arch, n_kv_heads, GgufFileType::kQ4_K_S)) EXPECT_EQ(type, GgmlType::kQ5_K);
    // Only Q4_K (and Q3_K) are raised: q4_0 and q5_k_m's Q5_K stay.
    for (const GgmlType type : attn_v_types(arch, n_kv_heads, GgufFileType::kQ4_0)) EXPECT_EQ(type, GgmlType::kQ4_0);
    EXPECT_EQ(attn_v_types(arch, n_kv_heads, GgufFileType::kQ5_K_M)[10], GgmlType::kQ5_K);
  }
}

TEST(GgufType70B, LlamaWithoutGqaAndQwen3AreNot70B) {
  // Llama with n_head == n_head_kv at 80 layers is LLM_TYPE_65B.
  EXPECT_EQ(attn_v_types("LlamaForCausalLM", kHeads, GgufFileType::kQ4_K_M)[10], GgmlType::kQ4_K);
  EXPECT_EQ(attn_v_types("Qwen3ForCausalLM", 2, GgufFileType::kQ4_K_M)[10], GgmlType::kQ4_K);
  EXPECT_EQ(attn_v_types("Qwen3ForCausalLM", 2, GgufFileType::kQ4_K_S)[4], GgmlType::kQ4_K);
}

}  // namespace
}  // namespace gptq::gguf
