// The router and the grouping of tokens by expert against a direct loop.
#include "gptq/model/moe.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gptq/model/config.h"

namespace gptq::model {
namespace {

LayerSpec sparse_layer(const std::string& architecture, bool norm_topk_prob) {
  nlohmann::json json = {{"architectures", {architecture}}, {"hidden_size", 16},
                         {"intermediate_size", 24},         {"moe_intermediate_size", 24},
                         {"num_hidden_layers", 1},          {"num_attention_heads", 2},
                         {"vocab_size", 10},                {"num_experts", 5},
                         {"num_local_experts", 5},          {"num_experts_per_tok", 2},
                         {"norm_topk_prob", norm_topk_prob}};
  return parse_model_config(json.dump(), "test").layer(0);
}

TEST(ExpertRouting, GroupsEveryAssignmentByExpertWithItsWeight) {
  for (const auto& [architecture, norm] : std::vector<std::pair<std::string, bool>>{
           {"MixtralForCausalLM", false}, {"Qwen3MoeForCausalLM", false}, {"Qwen3MoeForCausalLM", true}}) {
    SCOPED_TRACE(architecture + (norm ? " norm_topk_prob" : ""));
    const LayerSpec layer = sparse_layer(architecture, norm);
    at::manual_seed(0);
    BlockWeights weights;
    weights.tensors[layer.moe.router + ".weight"] = at::randn({5, 16});
    const at::Tensor x = at::randn({37, 16});
    const ExpertRouting routing = route_tokens(layer, weights, x);

    const at::Tensor probs = at::softmax(at::linear(x, weights.at(layer.moe.router + ".weight")), -1);
    ASSERT_EQ(routing.offsets.back(), 37 * 2);
    for (int expert = 0; expert < 5; ++expert) {
      const at::Tensor tokens = routing.expert_tokens(expert);
      const at::Tensor got_weights = routing.expert_weights(expert);
      int64_t expected_count = 0;
      for (int64_t token = 0; token < 37; ++token) {
        const at::Tensor top = std::get<1>(probs[token].topk(2));
        const bool picked = top.eq(expert).any().item<bool>();
        if (!picked) continue;
        ASSERT_LT(expected_count, routing.count(expert));
        EXPECT_EQ(tokens[expected_count].item<int64_t>(), token);  // ascending within the expert
        double expected = probs[token][expert].item<double>();
        if (layer.renormalize_top_k) expected /= std::get<0>(probs[token].topk(2)).sum().item<double>();
        EXPECT_NEAR(got_weights[expected_count].item<double>(), expected, 1e-6);
        ++expected_count;
      }
      EXPECT_EQ(routing.count(expert), expected_count);
    }
  }
}

TEST(ExpertRouting, MixtralKeepsRoutingWeightsInFp32) {
  const LayerSpec mixtral = sparse_layer("MixtralForCausalLM", false);
  const LayerSpec qwen = sparse_layer("Qwen3MoeForCausalLM", true);
  BlockWeights weights;
  weights.tensors[mixtral.moe.router + ".weight"] = at::randn({5, 16}).to(at::kBFloat16);
  weights.tensors[qwen.moe.router + ".weight"] = weights.tensors[mixtral.moe.router + ".weight"];
  const at::Tensor x = at::randn({8, 16}).to(at::kBFloat16);
  EXPECT_EQ(route_tokens(mixtral, weights, x).weights.scalar_type(), at::kFloat);
  EXPECT_EQ(route_tokens(qwen, weights, x).weights.scalar_type(), at::kBFloat16);
}

}  // namespace
}  // namespace gptq::model
