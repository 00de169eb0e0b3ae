// RoPE frequencies, tables and rotation against their formulas.
#include "gptq/model/rope.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

namespace gptq::model {
namespace {

// head_dim 8, default RoPE (theta 10000).
ModelConfig tiny_config() {
  nlohmann::json json = {{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 32}, {"intermediate_size", 48},
                         {"num_hidden_layers", 1}, {"num_attention_heads", 4}, {"vocab_size", 50},
                         {"head_dim", 8}};
  return parse_model_config(json.dump(), "test");
}

TEST(Rope, PartialRotaryLeavesTheTailOfEachHead) {
  ModelConfig config = tiny_config();
  config.rotary_dim = 4;  // of head_dim 8
  RotaryCache cache(config, 10, at::kFloat, at::kCPU);
  EXPECT_EQ(cache.cos().size(1), 4);
  at::Tensor x = at::randn({1, 2, 10, 8});
  at::Tensor got = apply_rotary(x, cache.cos(), cache.sin());
  EXPECT_TRUE(got.narrow(-1, 4, 4).equal(x.narrow(-1, 4, 4)));
  EXPECT_TRUE(got.narrow(-1, 0, 4).equal(apply_rotary(x.narrow(-1, 0, 4), cache.cos(), cache.sin())));
  EXPECT_FALSE(got.narrow(-1, 0, 4).equal(x.narrow(-1, 0, 4)));
}

TEST(Rope, DefaultInverseFrequencies) {
  RopeConfig rope;
  rope.theta = 10000.0;
  at::Tensor inv_freq = rope_inv_freq(rope, 8);
  ASSERT_EQ(inv_freq.size(0), 4);
  for (int idx = 0; idx < 4; ++idx) {
    EXPECT_NEAR(inv_freq[idx].item<double>(), std::pow(10000.0, -2.0 * idx / 8), 1e-6);
  }
}

TEST(Rope, Llama3ScalingBands) {
  RopeConfig rope;
  rope.type = RopeType::kLlama3;
  rope.theta = 500000.0;
  rope.factor = 8.0;
  rope.low_freq_factor = 1.0;
  rope.high_freq_factor = 4.0;
  rope.original_max_position_embeddings = 8192;
  const int64_t head_dim = 128;
  at::Tensor got = rope_inv_freq(rope, head_dim);
  for (int idx = 0; idx < head_dim / 2; ++idx) {
    double freq = std::pow(500000.0, -2.0 * idx / head_dim);
    double wavelen = 2 * M_PI / freq;
    double expected = freq;
    if (wavelen > 8192.0) {
      expected = freq / 8.0;
    } else if (wavelen >= 8192.0 / 4.0) {
      double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      expected = (1 - smooth) * freq / 8.0 + smooth * freq;
    }
    EXPECT_NEAR(got[idx].item<double>() / expected, 1.0, 1e-5) << "frequency " << idx;
  }
}

TEST(Rope, RotatesPairsHalfApart) {
  ModelConfig config = tiny_config();
  RotaryCache cache(config, 10, at::kFloat, at::kCPU);
  at::Tensor x = at::randn({1, 1, 10, 8});
  at::Tensor got = apply_rotary(x, cache.cos(), cache.sin());
  at::Tensor inv_freq = rope_inv_freq(config.rope, 8);
  for (int pos = 0; pos < 10; ++pos) {
    for (int idx = 0; idx < 4; ++idx) {
      double angle = pos * inv_freq[idx].item<double>();
      double a = x[0][0][pos][idx].item<double>(), b = x[0][0][pos][idx + 4].item<double>();
      EXPECT_NEAR(got[0][0][pos][idx].item<double>(), a * std::cos(angle) - b * std::sin(angle), 1e-5);
      EXPECT_NEAR(got[0][0][pos][idx + 4].item<double>(), b * std::cos(angle) + a * std::sin(angle), 1e-5);
    }
  }
}

}  // namespace
}  // namespace gptq::model
