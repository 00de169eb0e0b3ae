// The single-pass block quantizer against the GPTQ paper's staged procedure.
#include "gptq/calib/block_runner.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <tuple>

#include "gptq/solver/solver.h"

namespace gptq::calib {
namespace {

// Two fp32 evaluations of the same computation (different batching/order of
// identical ops) agree to this.
constexpr double kFp32Tol = 1e-4;

model::ModelConfig tiny_config() {
  nlohmann::json json = {{"architectures", {"LlamaForCausalLM"}},
                         {"hidden_size", 32},
                         {"intermediate_size", 64},
                         {"num_hidden_layers", 1},
                         {"num_attention_heads", 4},
                         {"num_key_value_heads", 2},
                         {"vocab_size", 50},
                         {"rms_norm_eps", 1e-5},
                         {"head_dim", 8}};
  return model::parse_model_config(json.dump(), "test");
}

model::BlockWeights random_block(const model::ModelConfig& config, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t q_out = config.n_heads * config.head_dim;
  const int64_t kv_out = config.n_kv_heads * config.head_dim;
  auto w = [](int64_t out, int64_t in) { return at::randn({out, in}) / std::sqrt(double(in)); };
  model::BlockWeights block;
  block.tensors["input_layernorm.weight"] = 1 + 0.1 * at::randn({config.hidden_size});
  block.tensors["post_attention_layernorm.weight"] = 1 + 0.1 * at::randn({config.hidden_size});
  block.tensors["self_attn.q_proj.weight"] = w(q_out, config.hidden_size);
  block.tensors["self_attn.k_proj.weight"] = w(kv_out, config.hidden_size);
  block.tensors["self_attn.v_proj.weight"] = w(kv_out, config.hidden_size);
  block.tensors["self_attn.o_proj.weight"] = w(config.hidden_size, q_out);
  block.tensors["mlp.gate_proj.weight"] = w(config.intermediate_size, config.hidden_size);
  block.tensors["mlp.up_proj.weight"] = w(config.intermediate_size, config.hidden_size);
  block.tensors["mlp.down_proj.weight"] = w(config.hidden_size, config.intermediate_size);
  return block;
}

model::BlockWeights clone(const model::BlockWeights& block) {
  model::BlockWeights copy = block;
  for (auto& [name, tensor] : copy.tensors) tensor = tensor.clone();
  return copy;
}

// Captures the whole input of one group (its chunks joined) and changes nothing.
class CaptureObserver : public model::GroupObserver {
 public:
  explicit CaptureObserver(int wanted) : wanted_(wanted) {}
  void observe(int group_index, const at::Tensor& input_chunk) override {
    if (group_index == wanted_) chunks_.push_back(input_chunk.clone());
  }
  void finish_group(int group_index, const std::vector<std::string>&, model::BlockWeights&) override {
    if (group_index == wanted_) captured = at::cat(chunks_, 0);
  }
  at::Tensor captured;

 private:
  int wanted_;
  std::vector<at::Tensor> chunks_;
};

// The paper's procedure: for each group, re-run the block from its input with
// the already-quantized groups swapped in, capture the group's input, solve.
at::Tensor staged_reference(const model::ModelConfig& config, model::BlockWeights& weights,
                            const at::Tensor& hidden, const model::RotaryCache& rope,
                            const solver::GptqConfig& gptq, const LinearSink& sink) {
  PhaseTimes times;
  const auto& groups = config.arch.sequential_groups;
  for (int group = 0; group < static_cast<int>(groups.size()); ++group) {
    CaptureObserver capture(group);
    model::block_forward(config, weights, hidden, rope, &capture);
    solver::HessianAccumulator accumulator(capture.captured.size(-1), capture.captured.device());
    accumulator.add(capture.captured);
    quantize_group(groups[group], accumulator.hessian(), accumulator.n_samples(), gptq, weights,
                   sink, times);
  }
  return model::block_forward(config, weights, hidden, rope, nullptr);
}

struct Collected {
  std::map<std::string, LinearResult> results;
  LinearSink sink() {
    return [this](LinearResult&& result) { results[result.name] = std::move(result); };
  }
};

struct Chunking {
  int64_t batch_chunk;     // windows per chunk; 0: automatic (one chunk here)
  int64_t max_held_bytes;  // MLP activation hold budget; 0: recompute
};
using RunnerParam = std::tuple<bool, Chunking>;  // desc_act, chunking
class BlockRunner : public ::testing::TestWithParam<RunnerParam> {};

TEST_P(BlockRunner, SinglePassEqualsStagedPaperProcedure) {
  const auto [desc_act, chunking] = GetParam();
  const auto [batch_chunk, max_held_bytes] = chunking;
  const auto config = tiny_config();
  const model::BlockWeights original = random_block(config, 1);
  at::manual_seed(2);
  const at::Tensor hidden = at::randn({6, 24, config.hidden_size});
  model::RotaryCache rope(config, 24, at::kFloat, at::kCPU);
  BlockQuantizeOptions options;
  options.gptq.quant.bits = 4;
  options.gptq.quant.group_size = 16;
  options.gptq.desc_act = desc_act;
  options.block.batch_chunk = batch_chunk;
  options.block.max_held_bytes = max_held_bytes;

  model::BlockWeights single = clone(original);
  Collected single_results;
  PhaseTimes times;
  model::BlockStats stats;
  at::Tensor single_out = quantize_block_gptq(config, single, hidden, rope, options,
                                              single_results.sink(), times, &stats);
  EXPECT_EQ(stats.mlp_recomputed, max_held_bytes == 0);
  if (batch_chunk > 0) EXPECT_EQ(stats.rows_per_chunk, batch_chunk);

  model::BlockWeights staged = clone(original);
  Collected staged_results;
  at::Tensor staged_out =
      staged_reference(config, staged, hidden, rope, options.gptq, staged_results.sink());

  ASSERT_EQ(single_results.results.size(), 7u);
  for (const auto& [name, expected] : staged_results.results) {
    SCOPED_TRACE(name);
    const auto& got = single_results.results.at(name);
    ASSERT_TRUE(got.quantized);
    EXPECT_EQ(got.n_hessian_rows, 6 * 24);
    EXPECT_NEAR(got.loss, expected.loss, 1e-4 * std::max(1.0, expected.loss));
    // Codes may differ only where a value sits on a rounding boundary.
    const double mismatch =
        got.packed.qweight.ne(expected.packed.qweight).to(at::kDouble).mean().item<double>();
    EXPECT_LT(mismatch, 0.01);
    EXPECT_TRUE(at::allclose(single.tensors.at(name + ".weight"), staged.tensors.at(name + ".weight"),
                             kFp32Tol, kFp32Tol));
  }
  EXPECT_TRUE(at::allclose(single_out, staged_out, kFp32Tol, kFp32Tol))
      << (single_out - staged_out).abs().max().item<double>();

  // And the quantization did something: weights moved, the output stayed close.
  const auto& q = single.tensors.at("self_attn.q_proj.weight");
  EXPECT_GT((q - original.tensors.at("self_attn.q_proj.weight")).abs().max().item<double>(), 1e-3);
  model::BlockWeights fp = clone(original);
  at::Tensor fp_out = model::block_forward(config, fp, hidden, rope, nullptr);
  EXPECT_LT(((single_out - fp_out).norm() / fp_out.norm()).item<double>(), 0.2);
}

// Whole batch in one chunk; one window per chunk with nothing held (every
// Hessian streamed, gate/up recomputed); two windows per chunk, held.
INSTANTIATE_TEST_SUITE_P(ActOrderAndChunking, BlockRunner,
                         ::testing::Combine(::testing::Values(false, true),
                                            ::testing::Values(Chunking{0, int64_t{1} << 30},
                                                              Chunking{1, 0},
                                                              Chunking{2, int64_t{1} << 30})));

TEST(BlockRunnerStreaming, HeldAndRecomputedGiveIdenticalOutputAndWeights) {
  const auto config = tiny_config();
  const model::BlockWeights original = random_block(config, 6);
  at::manual_seed(7);
  const at::Tensor hidden = at::randn({5, 16, config.hidden_size});
  model::RotaryCache rope(config, 16, at::kFloat, at::kCPU);
  struct Run {
    model::BlockWeights weights;
    Collected results;
    model::BlockStats stats;
    at::Tensor out;
  };
  auto run = [&](int64_t max_held_bytes) {
    Run result{clone(original), {}, {}, {}};
    BlockQuantizeOptions options;
    options.gptq.quant.group_size = 16;
    options.block.batch_chunk = 2;
    options.block.max_held_bytes = max_held_bytes;
    PhaseTimes times;
    result.out = quantize_block_gptq(config, result.weights, hidden, rope, options,
                                     result.results.sink(), times, &result.stats);
    return result;
  };
  Run held = run(int64_t{1} << 30);
  Run recomputed = run(0);
  EXPECT_FALSE(held.stats.mlp_recomputed);
  EXPECT_TRUE(recomputed.stats.mlp_recomputed);
  EXPECT_TRUE(held.out.equal(recomputed.out));
  for (const auto& [name, tensor] : held.weights.tensors) {
    EXPECT_TRUE(tensor.equal(recomputed.weights.tensors.at(name))) << name;
  }
  ASSERT_EQ(held.results.results.size(), 7u);
  for (const auto& [name, result] : held.results.results) {
    const auto& other = recomputed.results.results.at(name);
    EXPECT_TRUE(result.packed.qweight.equal(other.packed.qweight)) << name;
    EXPECT_EQ(result.loss, other.loss) << name;
  }
}

TEST(BlockRunnerNoTrueSequential, HessiansComeFromTheUnquantizedBlock) {
  const auto config = tiny_config();
  const model::BlockWeights original = random_block(config, 3);
  at::manual_seed(4);
  const at::Tensor hidden = at::randn({4, 16, config.hidden_size});
  model::RotaryCache rope(config, 16, at::kFloat, at::kCPU);
  BlockQuantizeOptions options;
  options.gptq.quant.group_size = 16;
  options.true_sequential = false;

  model::BlockWeights weights = clone(original);
  Collected results;
  PhaseTimes times;
  at::Tensor out = quantize_block_gptq(config, weights, hidden, rope, options, results.sink(), times);

  // Reference: H of the down projection from the fp block, solved on its own.
  CaptureObserver capture(3);
  model::BlockWeights fp = clone(original);
  model::block_forward(config, fp, hidden, rope, &capture);
  solver::HessianAccumulator accumulator(capture.captured.size(-1), at::kCPU);
  accumulator.add(capture.captured);
  auto expected = solver::gptq_quantize(original.tensors.at("mlp.down_proj.weight"),
                                        accumulator.hessian(), options.gptq);
  EXPECT_TRUE(at::allclose(weights.tensors.at("mlp.down_proj.weight"), expected.dequantized,
                           kFp32Tol, kFp32Tol));
  // The output is the quantized block's.
  at::Tensor again = model::block_forward(config, weights, hidden, rope, nullptr);
  EXPECT_TRUE(at::allclose(out, again, kFp32Tol, kFp32Tol));
}

TEST(BlockRunnerRtn, EveryLinearRoundedAndUnpackableShapesKept) {
  EXPECT_TRUE(packable(32, 64, 4));
  EXPECT_FALSE(packable(32, 172, 4));  // 172 codes are not whole 32-bit words
  EXPECT_FALSE(packable(48, 64, 3));
  EXPECT_TRUE(packable(64, 96, 3));

  const auto config = tiny_config();
  model::BlockWeights weights = random_block(config, 5);
  const at::Tensor before = weights.tensors.at("mlp.up_proj.weight").clone();
  Collected results;
  PhaseTimes times;
  solver::QuantConfig quant;
  quant.group_size = 16;
  quantize_block_rtn(config, weights, quant, results.sink(), times);
  ASSERT_EQ(results.results.size(), 7u);
  auto expected = solver::rtn_quantize(before, quant);
  EXPECT_TRUE(weights.tensors.at("mlp.up_proj.weight").equal(expected.dequantized));
}

}  // namespace
}  // namespace gptq::calib
