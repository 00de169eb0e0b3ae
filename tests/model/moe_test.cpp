// The router and the grouping of tokens by expert against a direct loop.
#include "gptq/model/moe.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
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

// DeepSeek-V3's router against a per-token loop written from its description.
TEST(ExpertRouting, DeepseekGroupLimitedSigmoidRouterWithBias) {
  nlohmann::json json = {{"architectures", {"DeepseekV3ForCausalLM"}}, {"hidden_size", 16},
                         {"intermediate_size", 24},   {"moe_intermediate_size", 8},
                         {"num_hidden_layers", 1},    {"num_attention_heads", 2},
                         {"vocab_size", 10},          {"n_routed_experts", 12},
                         {"num_experts_per_tok", 3},  {"n_group", 4},
                         {"topk_group", 2},           {"routed_scaling_factor", 2.5},
                         {"first_k_dense_replace", 0}, {"kv_lora_rank", 8},
                         {"q_lora_rank", nullptr},    {"n_shared_experts", 0},
                         {"qk_nope_head_dim", 4},     {"qk_rope_head_dim", 4},
                         {"v_head_dim", 4}};
  const LayerSpec layer = parse_model_config(json.dump(), "test").layer(0);
  ASSERT_TRUE(layer.is_moe());
  at::manual_seed(0);
  BlockWeights weights;
  weights.tensors[layer.moe.router + ".weight"] = at::randn({12, 16});
  weights.tensors[layer.moe.router_bias] = 0.3 * at::randn({12});
  const int64_t n_tokens = 41;
  const at::Tensor x = at::randn({n_tokens, 16}).to(at::kBFloat16);
  const ExpertRouting routing = route_tokens(layer, weights, x);
  EXPECT_EQ(routing.weights.scalar_type(), at::kFloat);  // kept in fp32, as transformers does
  ASSERT_EQ(routing.offsets.back(), n_tokens * 3);

  const at::Tensor scores =
      at::linear(x.to(at::kFloat), weights.at(layer.moe.router + ".weight")).sigmoid().to(at::kDouble);
  const at::Tensor bias = weights.at(layer.moe.router_bias).to(at::kDouble);
  std::vector<std::map<int, double>> expected(12);  // expert -> token -> weight
  int64_t limited_by_groups = 0;
  for (int64_t token = 0; token < n_tokens; ++token) {
    std::vector<double> choice(12);
    for (int expert = 0; expert < 12; ++expert) {
      choice[expert] = scores[token][expert].item<double>() + bias[expert].item<double>();
    }
    std::vector<std::pair<double, int>> groups;
    for (int group = 0; group < 4; ++group) {
      std::vector<double> members(choice.begin() + 3 * group, choice.begin() + 3 * group + 3);
      std::sort(members.rbegin(), members.rend());
      groups.push_back({members[0] + members[1], group});
    }
    std::sort(groups.rbegin(), groups.rend());
    std::vector<std::pair<double, int>> eligible, everyone;
    for (int expert = 0; expert < 12; ++expert) {
      everyone.push_back({choice[expert], expert});
      if (expert / 3 == groups[0].second || expert / 3 == groups[1].second) eligible.push_back({choice[expert], expert});
    }
    std::sort(eligible.rbegin(), eligible.rend());
    std::sort(everyone.rbegin(), everyone.rend());
    double sum = 0;
    for (int rank = 0; rank < 3; ++rank) sum += scores[token][eligible[rank].second].item<double>();
    for (int rank = 0; rank < 3; ++rank) {
      const int expert = eligible[rank].second;
      expected[expert][static_cast<int>(token)] = scores[token][expert].item<double>() / sum * 2.5;
      if (everyone[rank].second != expert) ++limited_by_groups;
    }
  }
  EXPECT_GT(limited_by_groups, 0) << "the data never exercises the group limit";
  for (int expert = 0; expert < 12; ++expert) {
    SCOPED_TRACE("expert " + std::to_string(expert));
    ASSERT_EQ(routing.count(expert), static_cast<int64_t>(expected[expert].size()));
    int64_t idx = 0;
    for (const auto& [token, weight] : expected[expert]) {
      EXPECT_EQ(routing.expert_tokens(expert)[idx].item<int64_t>(), token);
      EXPECT_NEAR(routing.expert_weights(expert)[idx].item<double>(), weight, 1e-5);
      ++idx;
    }
  }
}

}  // namespace
}  // namespace gptq::model
