#include "gptq/model/forward.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "gptq/core/error.h"
#include "gptq/model/mla.h"

namespace gptq::model {
namespace {

ModelConfig tiny_config(const std::string& arch = "LlamaForCausalLM", int64_t sliding_window = 0) {
  nlohmann::json json = {{"architectures", {arch}},  {"hidden_size", 32},       {"intermediate_size", 48},
                         {"num_hidden_layers", 1},   {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                         {"vocab_size", 50},         {"rms_norm_eps", 1e-5},     {"head_dim", 8}};
  if (sliding_window > 0) json["sliding_window"] = sliding_window;
  return parse_model_config(json.dump(), "test");
}

BlockWeights random_block(const ModelConfig& config, uint64_t seed = 0) {
  at::manual_seed(seed);
  const int64_t q_out = config.n_heads * config.head_dim, kv_out = config.n_kv_heads * config.head_dim;
  auto w = [](int64_t out, int64_t in) { return at::randn({out, in}) / std::sqrt(static_cast<double>(in)); };
  BlockWeights block;
  block.layer = 0;
  block.tensors["input_layernorm.weight"] = 1 + 0.1 * at::randn({config.hidden_size});
  block.tensors["post_attention_layernorm.weight"] = 1 + 0.1 * at::randn({config.hidden_size});
  block.tensors["self_attn.q_proj.weight"] = w(q_out, config.hidden_size);
  block.tensors["self_attn.k_proj.weight"] = w(kv_out, config.hidden_size);
  block.tensors["self_attn.v_proj.weight"] = w(kv_out, config.hidden_size);
  block.tensors["self_attn.o_proj.weight"] = w(config.hidden_size, q_out);
  block.tensors["mlp.gate_proj.weight"] = w(config.intermediate_size, config.hidden_size);
  block.tensors["mlp.up_proj.weight"] = w(config.intermediate_size, config.hidden_size);
  block.tensors["mlp.down_proj.weight"] = w(config.hidden_size, config.intermediate_size);
  if (config.arch.attention.qk_norm != gptq::model::QkNorm::kNone) {
    block.tensors["self_attn.q_norm.weight"] = 1 + 0.1 * at::randn({config.head_dim});
    block.tensors["self_attn.k_norm.weight"] = 1 + 0.1 * at::randn({config.head_dim});
  }
  return block;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Attention written out: softmax(q k^T * scale + causal mask) v, with kv heads repeated.
at::Tensor naive_block(const ModelConfig& config, const BlockWeights& weights, const at::Tensor& x,
                       int64_t window) {
  auto W = [&](const std::string& name) { return weights.at(name).to(at::kDouble); };
  auto norm = [&](const at::Tensor& h, const at::Tensor& w) {
    return w * h / (h.pow(2).mean(-1, true) + config.rms_norm_eps).sqrt();
  };
  at::Tensor h = x.to(at::kDouble);
  const int64_t B = h.size(0), T = h.size(1), D = config.head_dim;
  at::Tensor n1 = norm(h, W("input_layernorm.weight"));
  at::Tensor q = at::matmul(n1, W("self_attn.q_proj.weight").t()).view({B, T, config.n_heads, D}).transpose(1, 2);
  at::Tensor k = at::matmul(n1, W("self_attn.k_proj.weight").t()).view({B, T, config.n_kv_heads, D}).transpose(1, 2);
  at::Tensor v = at::matmul(n1, W("self_attn.v_proj.weight").t()).view({B, T, config.n_kv_heads, D}).transpose(1, 2);
  RotaryCache rope(config, T, at::kDouble, at::kCPU);
  q = apply_rotary(q, rope.cos(), rope.sin());
  k = apply_rotary(k, rope.cos(), rope.sin());
  const int64_t rep = config.n_heads / config.n_kv_heads;
  k = k.repeat_interleave(rep, 1);
  v = v.repeat_interleave(rep, 1);
  at::Tensor scores = at::matmul(q, k.transpose(2, 3)) / std::sqrt(static_cast<double>(D));
  at::Tensor pos = at::arange(T);
  at::Tensor offset = pos.unsqueeze(1) - pos.unsqueeze(0);
  at::Tensor visible = offset.ge(0);
  if (window > 0) visible = visible.logical_and(offset.lt(window));
  scores = scores.masked_fill(visible.logical_not(), -INFINITY);
  at::Tensor attn = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({B, T, -1});
  h = h + at::matmul(attn, W("self_attn.o_proj.weight").t());
  at::Tensor n2 = norm(h, W("post_attention_layernorm.weight"));
  at::Tensor act = at::silu(at::matmul(n2, W("mlp.gate_proj.weight").t())) * at::matmul(n2, W("mlp.up_proj.weight").t());
  return h + at::matmul(act, W("mlp.down_proj.weight").t());
}

TEST(BlockForward, MatchesNaiveAttentionWithGqa) {
  ModelConfig config = tiny_config();
  BlockWeights weights = random_block(config);
  at::Tensor x = at::randn({3, 12, 32});
  RotaryCache rope(config, 12, at::kFloat, at::kCPU);
  at::Tensor got = block_forward(config, weights, x, rope);
  EXPECT_LT(max_diff(got, naive_block(config, weights, x, 0)), 1e-4);
  // Chunking the batch changes nothing.
  BlockOptions one_row;
  one_row.batch_chunk = 1;
  EXPECT_LT(max_diff(block_forward(config, weights, x, rope, nullptr, one_row), got), 1e-6);
}

TEST(BlockForward, SlidingWindowMasksOldKeys) {
  ModelConfig config = tiny_config("MistralForCausalLM", 4);
  ASSERT_EQ(config.layer(0).sliding_window, 4);
  BlockWeights weights = random_block(config);
  at::Tensor x = at::randn({2, 12, 32});
  RotaryCache rope(config, 12, at::kFloat, at::kCPU);
  at::Tensor got = block_forward(config, weights, x, rope);
  EXPECT_LT(max_diff(got, naive_block(config, weights, x, 4)), 1e-4);
  EXPECT_GT(max_diff(got, naive_block(config, weights, x, 0)), 1e-3);
}

TEST(BlockForward, IsCausal) {
  ModelConfig config = tiny_config();
  BlockWeights weights = random_block(config);
  at::Tensor x = at::randn({1, 10, 32});
  RotaryCache rope(config, 10, at::kFloat, at::kCPU);
  at::Tensor a = block_forward(config, weights, x, rope);
  at::Tensor changed = x.clone();
  changed[0][7] += 1.0;
  at::Tensor b = block_forward(config, weights, changed, rope);
  EXPECT_LT(max_diff(a.narrow(1, 0, 7), b.narrow(1, 0, 7)), 1e-6);
  EXPECT_GT(max_diff(a.narrow(1, 7, 3), b.narrow(1, 7, 3)), 1e-3);
}

// Records the protocol: every call in order, each group's chunks joined.
class RecordingObserver : public GroupObserver {
 public:
  void observe(int group_index, const GroupInput& input) override {
    calls.push_back("observe " + std::to_string(group_index));
    EXPECT_FALSE(input.token_index.defined());  // dense groups see every token
    EXPECT_EQ(input.row_start, next_row[group_index]);
    next_row[group_index] += input.x.size(0);
    chunk_rows[group_index].push_back(input.x.size(0));
    chunks[group_index].push_back(input.x.clone());
  }
  void finish_group(int group_index, const std::vector<std::string>& linear_names,
                    BlockWeights& weights) override {
    calls.push_back("finish " + std::to_string(group_index));
    indices.push_back(group_index);
    names.push_back(linear_names);
    inputs.push_back(at::cat(chunks[group_index], 0));
    shapes.push_back(inputs.back().sizes().vec());
    if (group_index == zero_group) {
      for (const auto& name : linear_names) weights.tensors[name + ".weight"].zero_();
    }
  }
  int zero_group = -1;
  std::vector<std::string> calls;
  std::map<int, std::vector<int64_t>> chunk_rows;
  std::map<int, int64_t> next_row;
  std::map<int, std::vector<at::Tensor>> chunks;
  std::vector<int> indices;
  std::vector<std::vector<std::string>> names;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<at::Tensor> inputs;
};

TEST(BlockForward, ObserverSeesEachGroupInOrderChunkByChunk) {
  for (const std::string arch : {"LlamaForCausalLM", "Qwen3ForCausalLM"}) {
    ModelConfig config = tiny_config(arch);
    BlockWeights weights = random_block(config);
    at::Tensor x = at::randn({3, 6, 32});
    RotaryCache rope(config, 6, at::kFloat, at::kCPU);
    RecordingObserver observer;
    BlockOptions chunked;
    chunked.batch_chunk = 2;
    BlockStats stats;
    at::Tensor with_observer = block_forward(config, weights, x, rope, &observer, chunked, &stats);
    EXPECT_LT(max_diff(with_observer, block_forward(config, weights, x, rope)), 1e-6);
    // Each group: all its chunks, then its finish, before the next group's first chunk.
    std::vector<std::string> expected_calls;
    for (int group = 0; group < 4; ++group) {
      expected_calls.insert(expected_calls.end(), 2, "observe " + std::to_string(group));
      expected_calls.push_back("finish " + std::to_string(group));
      EXPECT_EQ(observer.chunk_rows[group], std::vector<int64_t>({2, 1}));
    }
    EXPECT_EQ(observer.calls, expected_calls);
    ASSERT_EQ(observer.indices, std::vector<int>({0, 1, 2, 3}));
    ASSERT_EQ(observer.names.size(), config.layer(0).groups.size());
    for (size_t group = 0; group < observer.names.size(); ++group) {
      EXPECT_EQ(observer.names[group], config.layer(0).groups[group].linears);
    }
    EXPECT_EQ(observer.shapes[0], std::vector<int64_t>({3, 6, 32}));
    EXPECT_EQ(observer.shapes[1], std::vector<int64_t>({3, 6, 32}));  // n_heads * head_dim
    EXPECT_EQ(observer.shapes[2], std::vector<int64_t>({3, 6, 32}));
    EXPECT_EQ(observer.shapes[3], std::vector<int64_t>({3, 6, 48}));
    EXPECT_LT(max_diff(observer.inputs[0],
                       rms_norm(x, weights.at("input_layernorm.weight"), config.rms_norm_eps)), 1e-7);
    EXPECT_EQ(stats.rows_per_chunk, 2);
    EXPECT_EQ(stats.n_chunks, 2);
    EXPECT_EQ(stats.mlp_hidden_bytes, 3 * 6 * 48 * 4);
    EXPECT_FALSE(stats.mlp_recomputed);  // 3.4 KiB fits the default budget
  }
}

TEST(BlockForward, HeldAndRecomputedMlpActivationsGiveTheSameOutput) {
  ModelConfig config = tiny_config();
  at::Tensor x = at::randn({5, 6, 32});
  RotaryCache rope(config, 6, at::kFloat, at::kCPU);
  auto run = [&](int64_t max_held_bytes, BlockStats& stats, RecordingObserver& observer) {
    BlockWeights weights = random_block(config, 3);
    observer.zero_group = 1;  // a swap must reach the recomputed rows too
    BlockOptions options;
    options.batch_chunk = 2;
    options.max_held_bytes = max_held_bytes;
    return block_forward(config, weights, x, rope, &observer, options, &stats);
  };
  BlockStats held_stats, recomputed_stats, small_budget_stats;
  RecordingObserver held_observer, recomputed_observer, small_budget_observer;
  at::Tensor held = run(int64_t{1} << 30, held_stats, held_observer);
  at::Tensor recomputed = run(0, recomputed_stats, recomputed_observer);
  at::Tensor small_budget = run(5 * 6 * 48 * 4 - 1, small_budget_stats, small_budget_observer);
  EXPECT_FALSE(held_stats.mlp_recomputed);
  EXPECT_TRUE(recomputed_stats.mlp_recomputed);
  EXPECT_TRUE(small_budget_stats.mlp_recomputed);  // one byte short of holding
  EXPECT_TRUE(held.equal(recomputed));
  EXPECT_TRUE(held.equal(small_budget));
  EXPECT_TRUE(held_observer.inputs[3].equal(recomputed_observer.inputs[3]));
  BlockWeights reference = random_block(config, 3);
  reference.tensors["self_attn.o_proj.weight"].zero_();
  EXPECT_LT(max_diff(held, block_forward(config, reference, x, rope)), 1e-6);
}

TEST(BlockForward, ObserverSwappedWeightsAreUsedDownstream) {
  ModelConfig config = tiny_config();
  at::Tensor x = at::randn({2, 6, 32});
  RotaryCache rope(config, 6, at::kFloat, at::kCPU);

  // Zeroing o_proj in the hook: the block becomes x + mlp(norm2(x)).
  BlockWeights weights = random_block(config, 7);
  BlockWeights expected_weights = random_block(config, 7);
  expected_weights.tensors["self_attn.o_proj.weight"].zero_();
  RecordingObserver observer;
  observer.zero_group = 1;
  at::Tensor got = block_forward(config, weights, x, rope, &observer);
  EXPECT_LT(max_diff(got, block_forward(config, expected_weights, x, rope)), 1e-6);
  // The MLP group then sees norm2 of the unchanged residual stream x.
  EXPECT_LT(max_diff(observer.inputs[2],
                     rms_norm(x, weights.at("post_attention_layernorm.weight"), config.rms_norm_eps)),
            1e-6);
  EXPECT_TRUE(weights.at("self_attn.o_proj.weight").eq(0).all().item<bool>());

  // Zeroing down_proj: the MLP contributes nothing.
  BlockWeights down = random_block(config, 7);
  RecordingObserver zero_down;
  zero_down.zero_group = 3;
  at::Tensor without_mlp = block_forward(config, down, x, rope, &zero_down);
  BlockWeights reference = random_block(config, 7);
  at::Tensor full = block_forward(config, reference, x, rope);
  EXPECT_GT(max_diff(without_mlp, full), 1e-3);
}

class ReshapingObserver : public GroupObserver {
 public:
  void observe(int, const GroupInput&) override {}
  void finish_group(int, const std::vector<std::string>& names, BlockWeights& weights) override {
    weights.tensors[names[0] + ".weight"] = at::zeros({1, 1});
  }
};

TEST(BlockForward, WeightsOfAnotherLayerAreRefused) {
  ModelConfig config = tiny_config();  // one layer
  BlockWeights weights = random_block(config);
  weights.layer = 1;
  RotaryCache rope(config, 4, at::kFloat, at::kCPU);
  EXPECT_THROW(block_forward(config, weights, at::randn({1, 4, 32}), rope), InputError);
}

// Names come from the LayerSpec, not from a family: a layer whose spec names
// its projections differently runs on tensors of those names.
TEST(BlockForward, NamesComeFromTheLayerSpec) {
  ModelConfig config = tiny_config();
  BlockWeights weights = random_block(config, 5);
  RotaryCache rope(config, 6, at::kFloat, at::kCPU);
  at::Tensor x = at::randn({2, 6, 32});
  const at::Tensor expected = block_forward(config, weights, x, rope);
  LayerSpec& layer = config.layers[0];
  layer.mlp.gate_proj = "feed_forward.w1";
  layer.mlp.up_proj = "feed_forward.w3";
  layer.mlp.down_proj = "feed_forward.w2";
  layer.input_norm.name = "attention_norm";
  layer.groups = layer_groups(layer);
  auto rename = [&](const std::string& from, const std::string& to) {
    weights.tensors[to] = weights.tensors.at(from);
    weights.tensors.erase(from);
  };
  rename("mlp.gate_proj.weight", "feed_forward.w1.weight");
  rename("mlp.up_proj.weight", "feed_forward.w3.weight");
  rename("mlp.down_proj.weight", "feed_forward.w2.weight");
  rename("input_layernorm.weight", "attention_norm.weight");
  EXPECT_TRUE(block_forward(config, weights, x, rope).equal(expected));
  RecordingObserver observer;
  EXPECT_TRUE(block_forward(config, weights, x, rope, &observer).allclose(expected, 1e-6, 1e-6));
  EXPECT_EQ(observer.names[2], std::vector<std::string>({"feed_forward.w1", "feed_forward.w3"}));
}

TEST(BlockForward, ObserverMustKeepShapes) {
  ModelConfig config = tiny_config();
  BlockWeights weights = random_block(config);
  RotaryCache rope(config, 4, at::kFloat, at::kCPU);
  ReshapingObserver observer;
  EXPECT_THROW(block_forward(config, weights, at::randn({1, 4, 32}), rope, &observer), InputError);
}

// DeepSeek-V3's interleaved pairs (x0, x1), (x2, x3), ... rotate like
// rotate_half's (x_i, x_{i + d/2}) once de-interleaved.
TEST(Rope, InterleavedPairsRotateLikeDeinterleavedHalves) {
  ModelConfig config = tiny_config();
  RotaryCache cache(config, 10, at::kFloat, at::kCPU);
  const at::Tensor x = at::randn({2, 3, 10, 8});
  const at::Tensor deinterleaved = at::cat({x.slice(-1, 0, 8, 2), x.slice(-1, 1, 8, 2)}, -1);
  EXPECT_LT(max_diff(apply_rotary_interleaved(x, cache.cos(), cache.sin()),
                     apply_rotary(deinterleaved, cache.cos(), cache.sin())), 1e-6);
}

ModelConfig mla_config(bool q_lora) {
  nlohmann::json json = {{"architectures", {"DeepseekV3ForCausalLM"}},
                         {"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 1},
                         {"num_attention_heads", 4}, {"vocab_size", 50}, {"rms_norm_eps", 1e-2},
                         {"first_k_dense_replace", 1}, {"n_routed_experts", 4}, {"num_experts_per_tok", 2},
                         {"moe_intermediate_size", 16}, {"kv_lora_rank", 12}, {"qk_nope_head_dim", 6},
                         {"qk_rope_head_dim", 4}, {"v_head_dim", 5}};
  json["q_lora_rank"] = q_lora ? nlohmann::json(20) : nlohmann::json(nullptr);
  return parse_model_config(json.dump(), "test");
}

BlockWeights random_mla_block(const ModelConfig& config) {
  at::manual_seed(5);
  const LayerSpec& layer = config.layer(0);
  BlockWeights block;
  block.layer = 0;
  for (const auto& name : layer.linear_names()) {
    const std::vector<int64_t> shape = linear_shape(config, 0, name);
    block.tensors[name + ".weight"] = at::randn(shape) / std::sqrt(static_cast<double>(shape[1]));
  }
  block.tensors["input_layernorm.weight"] = 1 + 0.1 * at::randn({config.hidden_size});
  block.tensors["post_attention_layernorm.weight"] = 1 + 0.1 * at::randn({config.hidden_size});
  if (layer.mla.q_lora_rank > 0) {
    block.tensors["self_attn.q_a_layernorm.weight"] = 1 + 0.1 * at::randn({layer.mla.q_lora_rank});
  }
  block.tensors["self_attn.kv_a_layernorm.weight"] = 1 + 0.1 * at::randn({layer.mla.kv_lora_rank});
  return block;
}

// The latent groups read the latents of the finished input projections,
// normed with their own eps (1e-6, not rms_norm_eps), in block order.
TEST(BlockForward, LatentAttentionObserverSitesAndInputs) {
  for (const bool q_lora : {true, false}) {
    SCOPED_TRACE(q_lora ? "q_lora_rank 20" : "q_lora_rank null");
    const ModelConfig config = mla_config(q_lora);
    const LayerSpec& layer = config.layer(0);
    BlockWeights weights = random_mla_block(config);
    const at::Tensor x = at::randn({3, 6, 32});
    RotaryCache rope(config, 6, at::kFloat, at::kCPU);
    RecordingObserver observer;
    BlockOptions chunked;
    chunked.batch_chunk = 2;
    const at::Tensor plain = block_forward(config, weights, x, rope);
    EXPECT_LT(max_diff(block_forward(config, weights, x, rope, &observer, chunked), plain), 1e-6);

    const size_t n_groups = q_lora ? 6 : 5;
    ASSERT_EQ(observer.indices.size(), n_groups);
    const at::Tensor normed = rms_norm(x, weights.at("input_layernorm.weight"), 1e-2);
    EXPECT_LT(max_diff(observer.inputs[0], normed), 1e-6);
    size_t group = 1;
    if (q_lora) {
      EXPECT_EQ(observer.names[group], std::vector<std::string>{"self_attn.q_b_proj"});
      const at::Tensor q_a = at::linear(normed, weights.at("self_attn.q_a_proj.weight"));
      EXPECT_LT(max_diff(observer.inputs[group], rms_norm(q_a, weights.at("self_attn.q_a_layernorm.weight"), 1e-6)),
                1e-6);
      ++group;
    }
    EXPECT_EQ(observer.names[group], std::vector<std::string>{"self_attn.kv_b_proj"});
    const at::Tensor kv_a = at::linear(normed, weights.at("self_attn.kv_a_proj_with_mqa.weight")).narrow(-1, 0, 12);
    EXPECT_LT(max_diff(observer.inputs[group], rms_norm(kv_a, weights.at("self_attn.kv_a_layernorm.weight"), 1e-6)),
              1e-6);
    EXPECT_GT(max_diff(observer.inputs[group], rms_norm(kv_a, weights.at("self_attn.kv_a_layernorm.weight"), 1e-2)),
              1e-4);  // the eps is not rms_norm_eps
    EXPECT_EQ(observer.shapes[group + 1], (std::vector<int64_t>{3, 6, 4 * 5}));  // o_proj: n_heads * v_head_dim
    EXPECT_EQ(observer.names[group + 1], std::vector<std::string>{layer.attention.o_proj});

    // Zeroing the input projections in their hook: the latents downstream see it.
    BlockWeights zeroed = random_mla_block(config);
    RecordingObserver zero_inputs;
    zero_inputs.zero_group = 0;
    block_forward(config, zeroed, x, rope, &zero_inputs, chunked);
    EXPECT_TRUE(zero_inputs.inputs[1].eq(0).all().item<bool>());
  }
}

}  // namespace
}  // namespace gptq::model
