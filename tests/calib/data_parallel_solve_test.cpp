// A solve split across two data-parallel ranks (a thread each, joined over
// Gloo on loopback as two processes would be) against the same solve in one
// process: each rank sums only its own rows into the Hessian, reduce_hessian
// adds them up, and quantize_group splits the stacked rows, so both ranks end
// with the one-process result.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <future>

#include "gptq/calib/block_runner.h"
#include "gptq/dist/communicator.h"
#include "gptq/pack/format.h"
#include "gptq/solver/hessian.h"
#include "testing/free_port.h"

namespace gptq::calib {
namespace {

using gptq::testing::free_port;

struct Solved {
  std::vector<LinearResult> results;
  model::BlockWeights weights;
  int64_t n_rows = 0;
};

// q (48 rows) and k (24 rows), drawn once before any rank thread starts:
// the ranks share the process's global generator, so drawing them per rank
// raced (one thread reseeding while the other drew) and left the ranks
// solving different weights when the machine was busy.
model::BlockWeights make_weights() {
  at::manual_seed(7);
  model::BlockWeights weights;
  weights.tensors["q.weight"] = at::randn({48, 64});
  weights.tensors["k.weight"] = at::randn({24, 64});
  return weights;
}

// q and k stacked into one solve, 4-bit g16 with act-order.
Solved solve(const std::vector<at::Tensor>& inputs, const model::BlockWeights& start, dist::Communicator* comm) {
  Solved solved;
  for (const auto& [name, tensor] : start.tensors) solved.weights.tensors[name] = tensor.clone();
  solver::HessianAccumulator accumulator(64, c10::Device(c10::kCPU));
  for (const at::Tensor& x : inputs) accumulator.add(x);
  solved.n_rows = accumulator.n_samples();
  const at::Tensor H =
      reduce_hessian(accumulator.hessian(), 64, c10::Device(c10::kCPU), solved.n_rows, comm, "the test Hessian");
  solver::GptqConfig gptq;
  gptq.quant.bits = 4;
  gptq.quant.group_size = 16;
  gptq.desc_act = true;
  const solver::SchemeResolver schemes(solver::scheme_of(gptq));
  const std::unique_ptr<pack::OutputFormat> format = pack::make_output_format("gptq");
  const SolveContext context{&schemes, format.get(), gptq, "model.layers.0.", false, comm};
  PhaseTimes times;
  quantize_group({"q", "k"}, H, solved.n_rows, context, solved.weights,
                 [&](LinearResult&& result) { solved.results.push_back(std::move(result)); }, times);
  return solved;
}

void expect_same(const Solved& one, const Solved& other) {
  ASSERT_EQ(one.results.size(), other.results.size());
  EXPECT_EQ(one.n_rows, other.n_rows);
  for (size_t idx = 0; idx < one.results.size(); ++idx) {
    const LinearResult& a = one.results[idx];
    const LinearResult& b = other.results[idx];
    EXPECT_EQ(a.name, b.name);
    // Summing two Hessian halves rounds differently from one running sum:
    // a code may flip where a weight sits on a rounding boundary.
    const double equal = a.solved.codes.eq(b.solved.codes).to(at::kDouble).mean().item<double>();
    EXPECT_GE(equal, 0.999) << a.name;
    EXPECT_TRUE(at::equal(a.solved.g_idx, b.solved.g_idx)) << a.name;
    EXPECT_TRUE(at::allclose(a.solved.scales, b.solved.scales, 1e-4, 1e-6)) << a.name;
    EXPECT_NEAR(a.loss, b.loss, 1e-3 * std::abs(a.loss) + 1e-9) << a.name;
  }
}

TEST(DataParallelSolve, TwoRanksEndWithTheOneProcessResult) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({300, 64}) * at::linspace(0.2, 2.0, 64);
  const std::vector<at::Tensor> halves{x.narrow(0, 0, 170), x.narrow(0, 170, 130)};
  const model::BlockWeights start = make_weights();
  const Solved alone = solve({halves[0], halves[1]}, start, nullptr);

  const int port = free_port();
  auto rank_job = [&](int rank) {
    dist::LaunchInfo launch{rank, 2, rank, "127.0.0.1", port, "test"};
    std::unique_ptr<dist::Communicator> comm =
        dist::connect(launch, c10::Device(c10::kCPU), std::chrono::milliseconds(30000));
    Solved solved = solve({halves[static_cast<size_t>(rank)]}, start, comm.get());
    comm->barrier("the end of the test");
    return solved;
  };
  auto second = std::async(std::launch::async, rank_job, 1);
  const Solved first = rank_job(0);
  const Solved other = second.get();
  expect_same(alone, first);
  // Both ranks hold the whole, identical result (the gathered rows), and the
  // same quantized weights to continue the block with.
  for (size_t idx = 0; idx < first.results.size(); ++idx) {
    EXPECT_TRUE(at::equal(first.results[idx].solved.codes, other.results[idx].solved.codes));
    EXPECT_TRUE(at::equal(first.results[idx].solved.scales, other.results[idx].solved.scales));
  }
  EXPECT_TRUE(at::equal(first.weights.at("q.weight"), other.weights.at("q.weight")));
  EXPECT_TRUE(at::equal(first.weights.at("k.weight"), other.weights.at("k.weight")));
}

}  // namespace
}  // namespace gptq::calib
