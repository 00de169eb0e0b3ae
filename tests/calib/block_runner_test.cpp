// The single-pass block quantizer against the GPTQ paper's staged procedure.
#include "gptq/calib/block_runner.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <tuple>

#include "gptq/core/error.h"
#include "gptq/pack/format.h"
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

at::Tensor random_linear(int64_t out, int64_t in) { return at::randn({out, in}) / std::sqrt(double(in)); }

// Layer 0's norms and attention projections, seeded.
model::BlockWeights random_attention_block(const model::ModelConfig& config, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t q_out = config.n_heads * config.head_dim;
  const int64_t kv_out = config.n_kv_heads * config.head_dim;
  model::BlockWeights block;
  block.layer = 0;
  block.tensors["input_layernorm.weight"] = 1 + 0.1 * at::randn({config.hidden_size});
  block.tensors["post_attention_layernorm.weight"] = 1 + 0.1 * at::randn({config.hidden_size});
  block.tensors["self_attn.q_proj.weight"] = random_linear(q_out, config.hidden_size);
  block.tensors["self_attn.k_proj.weight"] = random_linear(kv_out, config.hidden_size);
  block.tensors["self_attn.v_proj.weight"] = random_linear(kv_out, config.hidden_size);
  block.tensors["self_attn.o_proj.weight"] = random_linear(config.hidden_size, q_out);
  return block;
}

model::BlockWeights random_block(const model::ModelConfig& config, uint64_t seed) {
  model::BlockWeights block = random_attention_block(config, seed);
  auto w = random_linear;
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

// A solve context for layer 0 with one scheme (gptq.quant) in GPTQ v1, owning
// what it points to.
struct Job {
  explicit Job(const solver::GptqConfig& gptq)
      : schemes(solver::scheme_of(gptq)), format(pack::make_output_format("gptq")) {
    options.solve = {&schemes, format.get(), gptq, "model.layers.0."};
  }
  Job(const Job&) = delete;
  solver::SchemeResolver schemes;
  std::unique_ptr<pack::OutputFormat> format;
  BlockQuantizeOptions options;
};

solver::GptqConfig grouped(int group_size, bool desc_act = false) {
  solver::GptqConfig gptq;
  gptq.quant.group_size = group_size;
  gptq.desc_act = desc_act;
  return gptq;
}

// Captures the whole input of one group (its chunks joined) and changes nothing.
class CaptureObserver : public model::GroupObserver {
 public:
  explicit CaptureObserver(int wanted) : wanted_(wanted) {}
  void observe(int group_index, const model::GroupInput& input) override {
    if (group_index == wanted_) chunks_.push_back(input.x.clone());
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
                            const SolveContext& context, const LinearSink& sink,
                            const model::BlockOptions& block = {}) {
  PhaseTimes times;
  const auto& groups = config.layer(0).groups;
  for (int group = 0; group < static_cast<int>(groups.size()); ++group) {
    CaptureObserver capture(group);
    model::block_forward(config, weights, hidden, rope, &capture, block);
    solver::HessianAccumulator accumulator(capture.captured.size(-1), capture.captured.device());
    accumulator.add(capture.captured);
    quantize_group(groups[group].linears, accumulator.hessian(), accumulator.n_samples(), context,
                   weights, sink, times);
  }
  return model::block_forward(config, weights, hidden, rope, nullptr);
}

struct Collected {
  std::map<std::string, LinearResult> results;
  std::vector<std::string> order;  // names as they reached the sink
  LinearSink sink() {
    return [this](LinearResult&& result) {
      order.push_back(result.name);
      results[result.name] = std::move(result);
    };
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
  Job job(grouped(16, desc_act));
  BlockQuantizeOptions& options = job.options;
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
      staged_reference(config, staged, hidden, rope, options.solve, staged_results.sink());

  ASSERT_EQ(single_results.results.size(), 7u);
  for (const auto& [name, expected] : staged_results.results) {
    SCOPED_TRACE(name);
    const auto& got = single_results.results.at(name);
    ASSERT_TRUE(got.quantized);
    EXPECT_EQ(got.n_hessian_rows, 6 * 24);
    EXPECT_NEAR(got.loss, expected.loss, 1e-4 * std::max(1.0, expected.loss));
    // Codes may differ only where a value sits on a rounding boundary.
    const double mismatch =
        got.solved.codes.ne(expected.solved.codes).to(at::kDouble).mean().item<double>();
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
    Job job(grouped(16));
    BlockQuantizeOptions& options = job.options;
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
    EXPECT_TRUE(result.solved.codes.equal(other.solved.codes)) << name;
    EXPECT_EQ(result.loss, other.loss) << name;
  }
}

TEST(BlockRunnerNoTrueSequential, HessiansComeFromTheUnquantizedBlock) {
  const auto config = tiny_config();
  const model::BlockWeights original = random_block(config, 3);
  at::manual_seed(4);
  const at::Tensor hidden = at::randn({4, 16, config.hidden_size});
  model::RotaryCache rope(config, 16, at::kFloat, at::kCPU);
  Job job(grouped(16));
  BlockQuantizeOptions& options = job.options;
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
                                        accumulator.hessian(), options.solve.gptq);
  EXPECT_TRUE(at::allclose(weights.tensors.at("mlp.down_proj.weight"), expected.dequantized,
                           kFp32Tol, kFp32Tol));
  // The output is the quantized block's.
  at::Tensor again = model::block_forward(config, weights, hidden, rope, nullptr);
  EXPECT_TRUE(at::allclose(out, again, kFp32Tol, kFp32Tol));
}

TEST(BlockRunnerRtn, EveryLinearRounded) {
  const auto config = tiny_config();
  model::BlockWeights weights = random_block(config, 5);
  const at::Tensor before = weights.tensors.at("mlp.up_proj.weight").clone();
  Collected results;
  PhaseTimes times;
  Job job(grouped(16));
  quantize_block_rtn(config, weights, job.options.solve, results.sink(), times);
  ASSERT_EQ(results.results.size(), 7u);
  auto expected = solver::rtn_quantize(before, job.options.solve.gptq.quant);
  EXPECT_TRUE(weights.tensors.at("mlp.up_proj.weight").equal(expected.dequantized));
  EXPECT_NEAR(results.results.at("mlp.up_proj").loss, expected.loss, 1e-6 * expected.loss);
}

// Rows are independent given H, so q/k/v stacked into one solve (one check,
// one permutation, one Cholesky) give what three solves give.
TEST(BlockRunnerSharedHessian, StackedSolveEqualsSeparateSolves) {
  for (bool desc_act : {false, true}) {
    SCOPED_TRACE(desc_act ? "act-order" : "natural order");
    const auto config = tiny_config();
    model::BlockWeights weights = random_block(config, 8);
    const model::BlockWeights original = clone(weights);
    at::manual_seed(9);
    const at::Tensor X = at::randn({256, config.hidden_size});
    solver::HessianAccumulator accumulator(config.hidden_size, at::kCPU);
    accumulator.add(X);
    const at::Tensor H = accumulator.hessian();
    Job job(grouped(16, desc_act));
    Collected results;
    PhaseTimes times;
    const std::vector<std::string> qkv = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"};
    quantize_group(qkv, H, 256, job.options.solve, weights, results.sink(), times);
    ASSERT_EQ(results.results.size(), 3u);
    for (const auto& name : qkv) {
      SCOPED_TRACE(name);
      const auto& got = results.results.at(name);
      EXPECT_EQ(got.n_stacked, 3);
      const auto alone = solver::gptq_quantize(original.tensors.at(name + ".weight"), H, job.options.solve.gptq);
      const double mismatch = got.solved.codes.ne(alone.codes).to(at::kDouble).mean().item<double>();
      EXPECT_LT(mismatch, 0.002);  // only values on a rounding boundary may differ
      EXPECT_TRUE(got.solved.g_idx.equal(alone.g_idx));
      EXPECT_TRUE(at::allclose(got.solved.scales, alone.scales, 1e-6, 1e-7));
      EXPECT_TRUE(at::allclose(weights.tensors.at(name + ".weight"), alone.dequantized, kFp32Tol, kFp32Tol));
      EXPECT_NEAR(got.loss, alone.loss, 1e-3 * alone.loss);
      EXPECT_EQ(got.damp_used, alone.damp_used);
    }
  }
}

// The resolver decides per linear: kept in full precision, or another scheme
// (solved in its own stack).
TEST(BlockRunnerSchemes, ResolverSkipsAndOverridesPerLinear) {
  const auto config = tiny_config();
  model::BlockWeights weights = random_block(config, 10);
  const at::Tensor up_before = weights.tensors.at("mlp.up_proj.weight").clone();
  at::manual_seed(11);
  solver::HessianAccumulator accumulator(config.hidden_size, at::kCPU);
  accumulator.add(at::randn({128, config.hidden_size}));
  Job job(grouped(16));
  job.schemes.keep_full_precision("model.layers.0.mlp.up_proj", "test exclusion");
  solver::Scheme eight_bit{job.options.solve.gptq.quant};
  eight_bit.quant.bits = 8;
  job.schemes.add_rule("model\\.layers\\.0\\.mlp\\.gate", eight_bit);
  Collected results;
  PhaseTimes times;
  quantize_group({"mlp.gate_proj", "mlp.up_proj"}, accumulator.hessian(), 128, job.options.solve,
                 weights, results.sink(), times);
  const auto& up = results.results.at("mlp.up_proj");
  EXPECT_FALSE(up.quantized);
  EXPECT_EQ(up.skip_reason, "test exclusion");
  EXPECT_TRUE(weights.tensors.at("mlp.up_proj.weight").equal(up_before));
  const auto& gate = results.results.at("mlp.gate_proj");
  ASSERT_TRUE(gate.quantized);
  EXPECT_EQ(gate.scheme.quant.bits, 8);
  EXPECT_EQ(gate.n_stacked, 1);
  EXPECT_LE(gate.solved.codes.max().item<int64_t>(), 255);
}

// A recipe's per-module solver settings reach the solve: one linear of the
// group by RTN, one with act-order and more damping, each as the solver
// alone computes it and each in its own stack.
TEST(BlockRunnerSchemes, PerModuleMethodActOrderAndDamping) {
  const auto config = tiny_config();
  model::BlockWeights weights = random_block(config, 14);
  const model::BlockWeights before = clone(weights);
  at::manual_seed(15);
  solver::HessianAccumulator accumulator(config.hidden_size, at::kCPU);
  accumulator.add(at::randn({128, config.hidden_size}) * at::linspace(0.1, 3.0, config.hidden_size));
  const at::Tensor H = accumulator.hessian();
  Job job(grouped(16));
  solver::Scheme rtn = job.schemes.default_scheme();
  rtn.method = solver::SolveMethod::kRtn;
  job.schemes.add_rule(solver::SchemeResolver::exact("model.layers.0.mlp.gate_proj"), rtn);
  solver::Scheme act_order = job.schemes.default_scheme();
  act_order.desc_act = true;
  act_order.damp_percent = 0.1;
  job.schemes.add_rule(solver::SchemeResolver::exact("model.layers.0.mlp.up_proj"), act_order);
  Collected results;
  PhaseTimes times;
  quantize_group({"mlp.gate_proj", "mlp.up_proj"}, H, 128, job.options.solve, weights, results.sink(), times);

  const auto& gate = results.results.at("mlp.gate_proj");
  ASSERT_TRUE(gate.quantized);
  EXPECT_EQ(gate.scheme.method, solver::SolveMethod::kRtn);
  EXPECT_EQ(gate.n_stacked, 1);
  const solver::QuantizedWeight gate_rtn =
      solver::rtn_quantize(before.at("mlp.gate_proj.weight"), job.format->solver_scheme(rtn).quant);
  EXPECT_TRUE(gate.solved.codes.equal(gate_rtn.codes));
  EXPECT_TRUE(weights.at("mlp.gate_proj.weight").equal(gate_rtn.dequantized));

  const auto& up = results.results.at("mlp.up_proj");
  ASSERT_TRUE(up.quantized);
  EXPECT_EQ(up.n_stacked, 1);
  EXPECT_DOUBLE_EQ(up.damp_used, 0.1);
  const solver::QuantizedWeight up_gptq = solver::gptq_quantize(
      before.at("mlp.up_proj.weight"), H,
      solver::solve_config(job.options.solve.gptq, job.format->solver_scheme(act_order)));
  EXPECT_TRUE(up.solved.codes.equal(up_gptq.codes));
  EXPECT_TRUE(up.solved.g_idx.equal(up_gptq.g_idx));
  // Act-order: the group of a column follows the permutation, not the column index.
  EXPECT_FALSE(up.solved.g_idx.equal(at::arange(config.hidden_size, at::kInt).div(16, "floor")));
}

// An indefinite Hessian defeats every damping retry: by default the error
// names the stack and the damping tried; --on-solve-failure rtn rounds the
// stack to nearest instead and says why in each result.
TEST(BlockRunnerSchemes, FailedSolveErrorsOrFallsBackToRtn) {
  const auto config = tiny_config();
  const at::Tensor H = -at::eye(config.hidden_size);
  for (const bool fallback : {false, true}) {
    SCOPED_TRACE(fallback ? "rtn" : "error");
    model::BlockWeights weights = random_block(config, 16);
    const at::Tensor gate_before = weights.at("mlp.gate_proj.weight").clone();
    Job job(grouped(16));
    job.options.solve.rtn_on_solve_failure = fallback;
    Collected results;
    PhaseTimes times;
    auto run = [&] {
      quantize_group({"mlp.gate_proj", "mlp.up_proj"}, H, 128, job.options.solve, weights, results.sink(), times);
    };
    if (!fallback) {
      try {
        run();
        ADD_FAILURE() << "no error";
      } catch (const NumericalError& e) {
        const std::string message = e.what();
        EXPECT_NE(message.find("model.layers.0.mlp.gate_proj+mlp.up_proj: "), std::string::npos) << message;
        EXPECT_NE(message.find("damp_percent"), std::string::npos) << message;
      }
      EXPECT_TRUE(results.results.empty());
      continue;
    }
    run();
    const auto& gate = results.results.at("mlp.gate_proj");
    ASSERT_TRUE(gate.quantized);
    EXPECT_EQ(gate.scheme.method, solver::SolveMethod::kRtn);
    EXPECT_NE(gate.solve_failure.find("cholesky"), std::string::npos) << gate.solve_failure;
    const solver::QuantConfig grid = job.format->solver_scheme(job.schemes.default_scheme()).quant;
    EXPECT_TRUE(gate.solved.codes.equal(solver::rtn_quantize(gate_before, grid).codes));
    EXPECT_TRUE(results.results.at("mlp.up_proj").quantized);
  }
}

// Asymmetric v1 grids never store a zero point of 0 (vLLM and AutoGPTQ would
// misread it); v2 stores it. All-positive weights force zero = 0 everywhere.
TEST(BlockRunnerFormats, V1RaisesAsymmetricZeroPointsV2KeepsThem) {
  const auto config = tiny_config();
  at::manual_seed(12);
  solver::HessianAccumulator accumulator(config.hidden_size, at::kCPU);
  accumulator.add(at::randn({128, config.hidden_size}));
  for (const std::string format_name : {"gptq", "gptq_v2"}) {
    SCOPED_TRACE(format_name);
    model::BlockWeights weights = random_block(config, 13);
    weights.tensors["self_attn.q_proj.weight"] = weights.tensors.at("self_attn.q_proj.weight").abs() + 0.01;
    solver::GptqConfig gptq = grouped(16);
    gptq.quant.sym = false;
    Job job(gptq);
    job.format = pack::make_output_format(format_name);
    job.options.solve.format = job.format.get();
    Collected results;
    PhaseTimes times;
    quantize_group({"self_attn.q_proj"}, accumulator.hessian(), 128, job.options.solve, weights,
                   results.sink(), times);
    const auto& q = results.results.at("self_attn.q_proj");
    const int64_t n_grids = q.solved.zeros.numel();
    if (format_name == "gptq") {
      EXPECT_GE(q.solved.zeros.min().item<int64_t>(), 1);
      EXPECT_EQ(q.n_zero_raised, n_grids);
    } else {
      EXPECT_EQ(q.solved.zeros.max().item<int64_t>(), 0);
      EXPECT_EQ(q.n_zero_raised, 0);
    }
  }
}

// ---- sparse (MoE) blocks ----------------------------------------------------

// Qwen2-MoE: 6 experts, top-2, a shared expert with its sigmoid gate.
model::ModelConfig tiny_moe_config() {
  nlohmann::json json = {{"architectures", {"Qwen2MoeForCausalLM"}},
                         {"hidden_size", 32},
                         {"intermediate_size", 64},
                         {"moe_intermediate_size", 16},
                         {"shared_expert_intermediate_size", 24},
                         {"num_experts", 6},
                         {"num_experts_per_tok", 2},
                         {"norm_topk_prob", false},
                         {"num_hidden_layers", 1},
                         {"num_attention_heads", 4},
                         {"num_key_value_heads", 2},
                         {"vocab_size", 50},
                         {"rms_norm_eps", 1e-5},
                         {"qkv_bias", false}};
  return model::parse_model_config(json.dump(), "test");
}

model::BlockWeights random_moe_block(const model::ModelConfig& config, uint64_t seed) {
  model::BlockWeights block = random_attention_block(config, seed);
  const model::LayerSpec& layer = config.layer(0);
  block.tensors[layer.moe.router + ".weight"] = 3 * random_linear(layer.n_experts, config.hidden_size);
  block.tensors[layer.moe.shared_gate + ".weight"] = random_linear(1, config.hidden_size);
  for (const auto& group : layer.groups) {
    for (const auto& name : group.linears) {
      if (name.starts_with("self_attn.")) continue;
      const auto shape = model::linear_shape(config, 0, name);
      block.tensors[name + ".weight"] = random_linear(shape[0], shape[1]);
    }
  }
  return block;
}

TEST(BlockRunnerMoe, SinglePassEqualsStagedPaperProcedure) {
  const auto config = tiny_moe_config();
  const model::LayerSpec& layer = config.layer(0);
  // 2 attention groups + shared and 6 experts at each of the two MLP sites.
  ASSERT_EQ(layer.groups.size(), 2u + 2 * 7);
  const model::BlockWeights original = random_moe_block(config, 3);
  at::manual_seed(4);
  const at::Tensor hidden = at::randn({6, 24, config.hidden_size});
  model::RotaryCache rope(config, 24, at::kFloat, at::kCPU);
  Job job(grouped(16));
  job.options.block.batch_chunk = 2;         // three row chunks, each expert fed in spans
  job.options.block.min_expert_tokens_per_input = 1;

  model::BlockWeights single = clone(original);
  Collected single_results;
  PhaseTimes times;
  at::Tensor single_out =
      quantize_block_gptq(config, single, hidden, rope, job.options, single_results.sink(), times);

  model::BlockWeights staged = clone(original);
  Collected staged_results;
  at::Tensor staged_out =
      staged_reference(config, staged, hidden, rope, job.options.solve, staged_results.sink(),
                       job.options.block);

  ASSERT_EQ(single_results.results.size(), 4u + 3 + 3 * 6);
  int64_t routed_sum = 0;
  for (const auto& [name, expected] : staged_results.results) {
    SCOPED_TRACE(name);
    const auto& got = single_results.results.at(name);
    ASSERT_TRUE(got.quantized);
    EXPECT_EQ(got.n_hessian_rows, expected.n_hessian_rows);
    EXPECT_NEAR(got.loss, expected.loss, 1e-4 * std::max(1.0, expected.loss));
    EXPECT_TRUE(at::allclose(single.tensors.at(name + ".weight"), staged.tensors.at(name + ".weight"),
                             kFp32Tol, kFp32Tol));
    const bool routed = name.starts_with(layer.moe.experts);
    ASSERT_EQ(got.routing.has_value(), routed);
    if (!routed) {
      EXPECT_EQ(got.n_hessian_rows, 6 * 24);
      continue;
    }
    EXPECT_FALSE(got.routing->all_tokens);
    EXPECT_EQ(got.n_hessian_rows, got.routing->routed_tokens);
    if (name.ends_with(".gate_proj")) routed_sum += got.routing->routed_tokens;
  }
  // Every token went to exactly top_k experts.
  EXPECT_EQ(routed_sum, layer.top_k * 6 * 24);
  // The experts of a site are solved as one batch (concurrently on CPU) and
  // reach the sink in expert order, labelled for one grouped log line.
  std::vector<std::string> gate_up_order;
  for (const auto& name : single_results.order) {
    if (name.starts_with(layer.moe.experts) && !name.ends_with(".down_proj")) gate_up_order.push_back(name);
  }
  std::vector<std::string> expected_order;
  for (int expert = 0; expert < layer.n_experts; ++expert) {
    expected_order.push_back(layer.expert_linear(expert, "gate_proj"));
    expected_order.push_back(layer.expert_linear(expert, "up_proj"));
  }
  EXPECT_EQ(gate_up_order, expected_order);
  const LinearResult& last_down = single_results.results.at(layer.expert_linear(layer.n_experts - 1, "down_proj"));
  EXPECT_EQ(last_down.batch, "mlp.experts.0-5 down_proj");
  EXPECT_EQ(last_down.batch_remaining, 0);
  EXPECT_EQ(single_results.results.at(layer.expert_linear(0, "gate_proj")).batch_remaining, 2 * 6 - 1);
  EXPECT_EQ(single_results.results.at(layer.expert_linear(0, "gate_proj")).batch, "mlp.experts.0-5 gate_proj/up_proj");
  EXPECT_TRUE(single_results.results.at("mlp.shared_expert.gate_proj").batch.empty());
  EXPECT_TRUE(at::allclose(single_out, staged_out, kFp32Tol, kFp32Tol))
      << (single_out - staged_out).abs().max().item<double>();
  model::BlockWeights fp = clone(original);
  at::Tensor fp_out = model::block_forward(config, fp, hidden, rope, nullptr);
  EXPECT_LT(((single_out - fp_out).norm() / fp_out.norm()).item<double>(), 0.2);
}

TEST(BlockRunnerMoe, AllTokensModeAndTooFewRoutedFallBackToEveryToken) {
  const auto config = tiny_moe_config();
  const model::BlockWeights original = random_moe_block(config, 3);
  at::manual_seed(4);
  const at::Tensor hidden = at::randn({6, 24, config.hidden_size});
  model::RotaryCache rope(config, 24, at::kFloat, at::kCPU);
  const int64_t n_tokens = 6 * 24;

  for (const auto mode : {model::MoeCalibration::kAll, model::MoeCalibration::kRouted}) {
    SCOPED_TRACE(mode == model::MoeCalibration::kAll ? "all" : "routed, threshold 1000");
    Job job(grouped(16));
    job.options.block.moe_calibration = mode;
    // Routed mode with a threshold no expert reaches: every expert falls back.
    job.options.block.min_expert_tokens_per_input = 1000;
    model::BlockWeights weights = clone(original);
    Collected results;
    PhaseTimes times;
    at::Tensor out = quantize_block_gptq(config, weights, hidden, rope, job.options, results.sink(), times);
    int64_t routed_sum = 0;
    for (const auto& [name, result] : results.results) {
      if (!result.routing) continue;
      SCOPED_TRACE(name);
      EXPECT_EQ(result.n_hessian_rows, n_tokens);
      EXPECT_TRUE(result.routing->all_tokens);
      EXPECT_EQ(result.routing->too_few_routed, mode == model::MoeCalibration::kRouted);
      if (name.ends_with(".up_proj")) routed_sum += result.routing->routed_tokens;
    }
    EXPECT_EQ(routed_sum, 2 * n_tokens);
    // The output still follows the router: equal to the plain forward of the quantized weights.
    at::Tensor replay = model::block_forward(config, weights, hidden, rope, nullptr);
    EXPECT_TRUE(at::allclose(out, replay, kFp32Tol, kFp32Tol));
  }
}

}  // namespace
}  // namespace gptq::calib
