#include "gptq/calib/block_runner.h"

#include <ATen/ATen.h>

#include <chrono>
#include <map>

#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/solver/solver.h"

namespace gptq::calib {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// One fp32 Hessian per group, fed chunk by chunk; taken once the group is complete.
class GroupHessians {
 public:
  explicit GroupHessians(PhaseTimes& times) : times_(times) {}

  void add(int group_index, const at::Tensor& input_chunk) {
    const auto start = std::chrono::steady_clock::now();
    auto found = accumulators_.find(group_index);
    if (found == accumulators_.end()) {
      solver::HessianAccumulator fresh(input_chunk.size(-1), input_chunk.device());
      found = accumulators_.emplace(group_index, std::move(fresh)).first;
    }
    found->second.add(input_chunk);
    times_.hessian_s += seconds_since(start);
  }

  // H [in, in] and the rows it was accumulated over; frees the accumulator.
  at::Tensor take(int group_index, int64_t& n_rows) {
    const auto start = std::chrono::steady_clock::now();
    auto found = accumulators_.find(group_index);
    GPTQ_ASSERT(found != accumulators_.end(), "group ", group_index, " finished without any input");
    n_rows = found->second.n_samples();
    at::Tensor H = found->second.hessian();
    accumulators_.erase(found);
    times_.hessian_s += seconds_since(start);
    return H;
  }

 private:
  PhaseTimes& times_;
  std::map<int, solver::HessianAccumulator> accumulators_;
};

// Single pass: accumulate over all chunks, then solve and swap before the group runs.
class SolvingObserver : public model::GroupObserver {
 public:
  SolvingObserver(const solver::GptqConfig& config, const LinearSink& sink, PhaseTimes& times)
      : config_(config), sink_(sink), times_(times), hessians_(times) {}

  void observe(int group_index, const at::Tensor& input_chunk) override {
    hessians_.add(group_index, input_chunk);
  }

  void finish_group(int group_index, const std::vector<std::string>& linear_names,
                    model::BlockWeights& weights) override {
    int64_t n_rows = 0;
    at::Tensor H = hessians_.take(group_index, n_rows);
    quantize_group(linear_names, H, n_rows, config_, weights, sink_, times_);
  }

 private:
  const solver::GptqConfig& config_;
  const LinearSink& sink_;
  PhaseTimes& times_;
  GroupHessians hessians_;
};

// --no-true-sequential: only collects each group's Hessian from the unquantized block.
class CollectingObserver : public model::GroupObserver {
 public:
  explicit CollectingObserver(PhaseTimes& times) : hessians_(times) {}

  void observe(int group_index, const at::Tensor& input_chunk) override {
    hessians_.add(group_index, input_chunk);
  }

  void finish_group(int group_index, const std::vector<std::string>& linear_names,
                    model::BlockWeights&) override {
    Collected collected;
    collected.names = linear_names;
    collected.H = hessians_.take(group_index, collected.n_rows);
    groups_[group_index] = std::move(collected);
  }

  struct Collected {
    std::vector<std::string> names;
    at::Tensor H;
    int64_t n_rows = 0;
  };
  const std::map<int, Collected>& groups() const { return groups_; }

 private:
  GroupHessians hessians_;
  std::map<int, Collected> groups_;
};

LinearResult skipped(const std::string& name, const at::Tensor& W) {
  LinearResult result;
  result.name = name;
  result.rows = W.size(0);
  result.cols = W.size(1);
  result.quantized = false;
  return result;
}

}  // namespace

bool packable(int64_t rows, int64_t cols, int bits) {
  const int64_t multiple = bits == 3 ? 32 : 32 / bits;
  return rows % multiple == 0 && cols % multiple == 0;
}

void quantize_group(const std::vector<std::string>& linear_names, const at::Tensor& H,
                    int64_t n_hessian_rows, const solver::GptqConfig& config,
                    model::BlockWeights& weights, const LinearSink& sink, PhaseTimes& times) {
  for (const auto& name : linear_names) {
    const auto start = std::chrono::steady_clock::now();
    at::Tensor& W = weights.tensors.at(name + ".weight");
    if (!packable(W.size(0), W.size(1), config.quant.bits)) {
      sink(skipped(name, W));
      continue;
    }
    solver::QuantizedWeight solved;
    try {
      solved = H.defined() ? solver::gptq_quantize(W, H, config)
                           : solver::rtn_quantize(W, config.quant);
    } catch (...) {
      rethrow_with_context(name);
    }
    LinearResult result;
    result.name = name;
    result.rows = W.size(0);
    result.cols = W.size(1);
    result.quantized = true;
    result.loss = solved.loss;
    result.damp_used = solved.damp_used;
    result.n_hessian_rows = n_hessian_rows;
    result.packed = pack::pack_gptq(solved.codes, solved.zeros, solved.scales, solved.g_idx,
                                    config.quant.bits);
    W = solved.dequantized.to(W.device(), W.scalar_type());
    result.solve_s = seconds_since(start);
    times.solve_s += result.solve_s;
    sink(std::move(result));
  }
}

at::Tensor quantize_block_gptq(const model::ModelConfig& config, model::BlockWeights& weights,
                               const at::Tensor& hidden, const model::RotaryCache& rope,
                               const BlockQuantizeOptions& options, const LinearSink& sink,
                               PhaseTimes& times, model::BlockStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  const double observed_before = times.hessian_s + times.solve_s;
  at::Tensor output;
  if (options.true_sequential) {
    SolvingObserver observer(options.gptq, sink, times);
    output = model::block_forward(config, weights, hidden, rope, &observer, options.block, stats);
  } else {
    CollectingObserver collector(times);
    model::block_forward(config, weights, hidden, rope, &collector, options.block, stats);
    for (const auto& [group_index, group] : collector.groups()) {
      quantize_group(group.names, group.H, group.n_rows, options.gptq, weights, sink, times);
    }
    output = model::block_forward(config, weights, hidden, rope, nullptr, options.block);
  }
  times.forward_s += seconds_since(start) - (times.hessian_s + times.solve_s - observed_before);
  return output;
}

void quantize_block_rtn(const model::ModelConfig& config, model::BlockWeights& weights,
                        const solver::QuantConfig& quant, const LinearSink& sink,
                        PhaseTimes& times) {
  solver::GptqConfig rtn;
  rtn.quant = quant;
  for (const auto& group : config.arch.sequential_groups) {
    quantize_group(group, at::Tensor(), 0, rtn, weights, sink, times);
  }
}

}  // namespace gptq::calib
