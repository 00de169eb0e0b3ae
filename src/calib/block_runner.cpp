#include "gptq/calib/block_runner.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>

#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"
#include "gptq/solver/solver.h"

namespace gptq::calib {
namespace {

// One fp32 Hessian per group, fed chunk by chunk; taken once the group is
// complete (summed over the processes of a data-parallel run).
class GroupHessians {
 public:
  GroupHessians(PhaseTimes& times, dist::Communicator* comm) : times_(times), comm_(comm) {}

  // Every row of input.x counts, whether a whole chunk or a subset of its tokens.
  void add(int group_index, const model::GroupInput& input) {
    const auto start = std::chrono::steady_clock::now();
    auto found = accumulators_.find(group_index);
    if (found == accumulators_.end()) {
      solver::HessianAccumulator fresh(input.x.size(-1), input.x.device());
      found = accumulators_.emplace(group_index, std::move(fresh)).first;
    }
    found->second.add(input.x);
    times_.hessian_s += seconds_since(start);
  }

  // H [in, in] of the group whose first linear is `first` and the rows it
  // was accumulated over; frees the accumulator. In a data-parallel run this
  // process may have routed no token to an expert: it still takes part.
  at::Tensor take(int group_index, const std::string& first, const model::BlockWeights& weights,
                  const std::string& layer_prefix, int64_t& n_rows) {
    const auto start = std::chrono::steady_clock::now();
    auto found = accumulators_.find(group_index);
    GPTQ_ASSERT(found != accumulators_.end() || comm_ != nullptr, "group ", group_index, " finished without any input");
    at::Tensor H;
    n_rows = 0;
    if (found != accumulators_.end()) {
      n_rows = found->second.n_samples();
      H = found->second.hessian();
      accumulators_.erase(found);
    }
    const at::Tensor& W = weights.at(first + ".weight");
    H = reduce_hessian(H, W.size(1), W.device(), n_rows, comm_, "the Hessian of " + layer_prefix + first);
    times_.hessian_s += seconds_since(start);
    return H;
  }

 private:
  PhaseTimes& times_;
  dist::Communicator* comm_;
  std::map<int, solver::HessianAccumulator> accumulators_;
};

// Single pass: accumulate over all chunks, then solve and swap before the group runs.
class SolvingObserver : public model::GroupObserver {
 public:
  SolvingObserver(const SolveContext& context, const LinearSink& sink, PhaseTimes& times)
      : context_(context), sink_(sink), times_(times), hessians_(times, context.comm) {}

  void observe(int group_index, const model::GroupInput& input) override {
    hessians_.add(group_index, input);
  }
  void route_group(int group_index, const model::GroupRouting& routing) override {
    routings_[group_index] = routing;
  }

  void finish_group(int group_index, const std::vector<std::string>& linear_names,
                    model::BlockWeights& weights) override {
    int64_t n_rows = 0;
    at::Tensor H = hessians_.take(group_index, linear_names.front(), weights, context_.layer_prefix, n_rows);
    quantize_group(linear_names, H, n_rows, context_, weights, sink_, times_, routing_of(group_index));
  }

  // Many small solves (experts): on CPU one expert per thread, each solve's
  // own ops then run single-threaded (ATen runs a parallel_for nested in
  // another inline), which beats splitting every small solve across threads.
  // Results reach the sink in group order once all are solved.
  void finish_independent_groups(const std::vector<int>& group_indices,
                                 const std::vector<std::vector<std::string>>& linear_names,
                                 const std::string& label, model::BlockWeights& weights) override {
    struct Job {
      at::Tensor H;
      int64_t n_rows = 0;
      std::vector<LinearResult> results;
      PhaseTimes times;
    };
    std::vector<Job> jobs(group_indices.size());
    for (size_t idx = 0; idx < jobs.size(); ++idx) {
      jobs[idx].H = hessians_.take(group_indices[idx], linear_names[idx].front(), weights, context_.layer_prefix,
                                   jobs[idx].n_rows);
    }
    const auto start = std::chrono::steady_clock::now();
    auto solve = [&](int64_t begin, int64_t end) {
      for (int64_t idx = begin; idx < end; ++idx) {
        Job& job = jobs[idx];
        const LinearSink buffer = [&job](LinearResult&& result) { job.results.push_back(std::move(result)); };
        quantize_group(linear_names[idx], job.H, job.n_rows, context_, weights, buffer, job.times,
                       routing_of(group_indices[idx]));
        job.H.reset();
      }
    };
    const bool on_cpu = jobs.empty() || !jobs.front().H.defined() || jobs.front().H.device().is_cpu();
    // Data-parallel solves run collectives, which every process must issue in
    // the same order: one expert after another, each split across processes.
    if (on_cpu && jobs.size() > 1 && context_.comm == nullptr) {
      at::parallel_for(0, static_cast<int64_t>(jobs.size()), 1, solve);
    } else {
      solve(0, static_cast<int64_t>(jobs.size()));
    }
    const double wall_s = seconds_since(start);
    times_.solve_s += wall_s;
    int remaining = 0;
    for (const Job& job : jobs) remaining += static_cast<int>(job.results.size());
    for (Job& job : jobs) {
      for (LinearResult& result : job.results) {
        result.batch = label;
        result.batch_remaining = --remaining;
        if (remaining == 0) result.batch_wall_s = wall_s;
        sink_(std::move(result));
      }
    }
  }

 private:
  const model::GroupRouting* routing_of(int group_index) const {
    auto found = routings_.find(group_index);
    return found == routings_.end() ? nullptr : &found->second;
  }

  std::map<int, model::GroupRouting> routings_;
  const SolveContext& context_;
  const LinearSink& sink_;
  PhaseTimes& times_;
  GroupHessians hessians_;
};

// --no-true-sequential: only collects each group's Hessian from the unquantized block.
class CollectingObserver : public model::GroupObserver {
 public:
  CollectingObserver(PhaseTimes& times, const SolveContext& context)
      : hessians_(times, context.comm), layer_prefix_(context.layer_prefix) {}

  void observe(int group_index, const model::GroupInput& input) override {
    hessians_.add(group_index, input);
  }
  void route_group(int group_index, const model::GroupRouting& routing) override {
    groups_[group_index].routing = routing;
  }

  void finish_group(int group_index, const std::vector<std::string>& linear_names,
                    model::BlockWeights& weights) override {
    Collected& collected = groups_[group_index];
    collected.names = linear_names;
    collected.H = hessians_.take(group_index, linear_names.front(), weights, layer_prefix_, collected.n_rows);
  }

  struct Collected {
    std::vector<std::string> names;
    at::Tensor H;
    int64_t n_rows = 0;
    std::optional<model::GroupRouting> routing;
  };
  const std::map<int, Collected>& groups() const { return groups_; }

 private:
  GroupHessians hessians_;
  std::string layer_prefix_;
  std::map<int, Collected> groups_;
};

LinearResult skipped(const std::string& name, const at::Tensor& W, std::string reason) {
  LinearResult result;
  result.name = name;
  result.rows = W.size(0);
  result.cols = W.size(1);
  result.quantized = false;
  result.skip_reason = std::move(reason);
  return result;
}

// Linears of one group that run as one stacked solve: same scheme.
struct Stack {
  solver::Scheme scheme;
  std::vector<std::string> names;
};

// The group's quantized linears, split by the scheme the solver runs;
// the others go straight to the sink as skipped.
std::vector<Stack> plan_stacks(const std::vector<std::string>& linear_names, const SolveContext& context,
                               const model::BlockWeights& weights, const LinearSink& sink) {
  std::vector<Stack> stacks;
  for (const auto& name : linear_names) {
    const at::Tensor& W = weights.at(name + ".weight");
    const std::optional<solver::Scheme> scheme = context.schemes->resolve(context.layer_prefix + name);
    if (!scheme) {
      // Why, as the rule that decided it says ("recipe rules[2] (match '...')").
      const solver::SchemeResolver::Rule* rule = context.schemes->deciding_rule(context.layer_prefix + name);
      sink(skipped(name, W, rule && !rule->reason.empty() ? rule->reason : "excluded by the scheme"));
      continue;
    }
    if (auto why = context.format->cannot_store(W.size(0), W.size(1), *scheme)) {
      sink(skipped(name, W, *why));
      continue;
    }
    const solver::Scheme solver_scheme = context.format->solver_scheme(*scheme);
    auto same = std::find_if(stacks.begin(), stacks.end(),
                             [&](const Stack& stack) { return stack.scheme == solver_scheme; });
    if (same == stacks.end()) {
      stacks.push_back({solver_scheme, {name}});
    } else {
      same->names.push_back(name);
    }
  }
  return stacks;
}

// Every process's rows of a split solve, concatenated in rank order, so each
// holds the whole result. [groups, rows] tensors gather along their rows; the
// dequantized weight travels in the block's dtype (what the block keeps).
void gather_rows(solver::QuantizedWeight& solved, int64_t n_rows, c10::ScalarType weight_dtype,
                 dist::Communicator& comm, const std::string& name) {
  const std::vector<int64_t> sizes = dist::rows_per_rank(n_rows, comm.world_size());
  auto rows = [&](const at::Tensor& part, const char* what) {
    return comm.all_gather_rows(part.contiguous(), sizes, std::string(what) + " of " + name);
  };
  auto columns = [&](const at::Tensor& part, const char* what) {
    return part.defined() ? rows(part.t(), what).t() : part;
  };
  solved.codes = rows(solved.codes, "the codes");
  solved.scales = columns(solved.scales, "the scales");
  solved.zeros = columns(solved.zeros, "the zero points");
  solved.grid_zeros = columns(solved.grid_zeros, "the grid offsets");
  solved.dequantized = rows(solved.dequantized.to(weight_dtype), "the quantized weight");
  solved.row_loss = rows(solved.row_loss, "the row losses");
  if (solved.zero_raised.defined()) solved.zero_raised = rows(solved.zero_raised, "the raised zero points");
}

// One process's attempt at a stack's solve: the result, or what failed.
struct SolveAttempt {
  solver::QuantizedWeight solved;
  std::exception_ptr failure;
  bool numerical = false;  // the failure was a NumericalError
  std::string message;     // its message
};

SolveAttempt attempt_solve(const at::Tensor& W, const at::Tensor& H, const solver::GptqConfig& config,
                           solver::SolveMethod method, bool gptq, const SolveContext& context) {
  SolveAttempt attempt;
  try {
    if (context.solve) {
      attempt.solved = context.solve(W, H, config, method);
    } else {
      attempt.solved = gptq ? solver::gptq_quantize(W, H, config) : solver::rtn_quantize(W, config, H);
    }
  } catch (const NumericalError& e) {
    attempt.failure = std::current_exception();
    attempt.numerical = true;
    attempt.message = e.what();
  } catch (...) {
    attempt.failure = std::current_exception();
  }
  return attempt;
}

// Every process learns whether any attempt failed, so all take the same path:
// any other failure ends the run; a numerical one too, unless
// --on-solve-failure rtn rounds the stack to nearest instead (`solve_failure`
// then says why). `split`: the processes solved shares of the rows.
solver::QuantizedWeight settle_attempt(SolveAttempt attempt, const at::Tensor& W_mine, const solver::GptqConfig& config,
                                       bool gptq, bool split, const SolveContext& context, const std::string& name,
                                       std::string& solve_failure) {
  int64_t numerical_anywhere = attempt.numerical ? 1 : 0;
  int64_t other_anywhere = attempt.failure && !attempt.numerical ? 1 : 0;
  dist::Communicator* comm = context.comm;
  if (split) {
    at::Tensor outcome = at::tensor({numerical_anywhere, other_anywhere}, at::kLong);
    comm->all_reduce_sum(outcome, "the outcome of the solve of " + name);
    numerical_anywhere = outcome[0].item<int64_t>();
    other_anywhere = outcome[1].item<int64_t>();
  }
  auto rethrow_here = [&] {
    try {
      std::rethrow_exception(attempt.failure);
    } catch (...) {
      rethrow_with_context(name);
    }
  };
  if (attempt.failure && !attempt.numerical) rethrow_here();
  if (other_anywhere > 0) throw Error(name + ": the solve failed on another process (its own message says why)");
  if (numerical_anywhere == 0) return std::move(attempt.solved);
  if (!gptq || !context.rtn_on_solve_failure) {
    if (attempt.failure) rethrow_here();
    throw NumericalError(name + ": GPTQ failed numerically on another process's rows (its own message says why)");
  }
  solve_failure = attempt.message.empty() ? "GPTQ failed numerically on another process's rows" : attempt.message;
  if (comm == nullptr || comm->rank() == 0) {
    spdlog::warn("{}: {}; quantized by round-to-nearest instead (--on-solve-failure rtn)", name, solve_failure);
  }
  try {
    return solver::rtn_quantize(W_mine, config, at::Tensor());
  } catch (...) {
    rethrow_with_context(name);
  }
}

// The stack's solve split back into its linears: each one's result to the
// sink, its weight in the block replaced by the dequantized one.
void split_stack(const Stack& stack, const solver::QuantizedWeight& solved, int64_t n_stack_rows,
                 int64_t n_hessian_rows, const model::GroupRouting* routing, const std::string& solve_failure,
                 double elapsed, model::BlockWeights& weights, const LinearSink& sink) {
  int64_t row_start = 0;
  for (const std::string& name : stack.names) {
    at::Tensor& target = weights.tensors.at(name + ".weight");
    const int64_t n_rows = target.size(0);
    LinearResult result;
    result.name = name;
    result.rows = n_rows;
    result.cols = target.size(1);
    result.quantized = true;
    result.loss = solved.row_loss.narrow(0, row_start, n_rows).sum().item<double>() / 2;
    result.damp_used = solved.damp_used;
    result.n_hessian_rows = n_hessian_rows;
    result.n_stacked = static_cast<int>(stack.names.size());
    if (routing != nullptr) result.routing = *routing;
    result.n_zero_raised = solved.zero_raised.defined()
                               ? solved.zero_raised.narrow(0, row_start, n_rows).sum().item<int64_t>()
                               : 0;
    result.scheme = stack.scheme;
    if (!solve_failure.empty()) {
      result.scheme.method = solver::SolveMethod::kRtn;
      result.solve_failure = solve_failure;
    }
    result.solved.codes = solved.codes.narrow(0, row_start, n_rows);
    result.solved.zeros = solved.zeros.narrow(1, row_start, n_rows);
    result.solved.scales = solved.scales.narrow(1, row_start, n_rows);
    result.solved.grid_zeros = solved.grid_zeros.narrow(1, row_start, n_rows);
    result.solved.g_idx = solved.g_idx;
    result.solve_s = elapsed * static_cast<double>(n_rows) / static_cast<double>(n_stack_rows);
    target = solved.dequantized.narrow(0, row_start, n_rows).to(target.device(), target.scalar_type());
    row_start += n_rows;
    sink(std::move(result));
  }
}

// Solves one stack: the weights stacked row-wise, one solve, split back.
void solve_stack(const Stack& stack, const at::Tensor& H, int64_t n_hessian_rows,
                 const model::GroupRouting* routing, const SolveContext& context,
                 model::BlockWeights& weights, const LinearSink& sink, PhaseTimes& times) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> parts;
  std::string names;
  for (const auto& name : stack.names) {
    parts.push_back(weights.at(name + ".weight"));
    names += (names.empty() ? "" : "+") + name;
  }
  const std::string stack_name = context.layer_prefix + names;
  const at::Tensor W = parts.size() == 1 ? parts.front() : at::cat(parts, 0);
  solver::GptqConfig config = solver::solve_config(context.gptq, stack.scheme);
  config.grid = context.format->grid(stack.scheme);
  GPTQ_ASSERT(config.grid || stack.scheme.grid.empty(), "format '", context.format->name(), "' has no grid '",
              stack.scheme.grid, "'");
  const bool gptq = H.defined() && stack.scheme.method == solver::SolveMethod::kGptq;
  // A data-parallel run splits the rows across the processes (each solves
  // its share against the same H, then all gather); fewer rows than
  // processes: every process solves them all, with the same result.
  dist::Communicator* comm = context.comm;
  const bool split = comm != nullptr && W.size(0) >= comm->world_size();
  const dist::RowRange mine =
      split ? dist::rows_of_rank(W.size(0), comm->rank(), comm->world_size()) : dist::RowRange{0, W.size(0)};
  const at::Tensor W_mine = split ? W.narrow(0, mine.begin, mine.count) : W;
  std::string solve_failure;  // set when GPTQ failed numerically and RTN stood in
  solver::QuantizedWeight solved =
      settle_attempt(attempt_solve(W_mine, H, config, stack.scheme.method, gptq, context), W_mine, config, gptq,
                     split, context, stack_name, solve_failure);
  if (split) gather_rows(solved, W.size(0), parts.front().scalar_type(), *comm, stack_name);
  const double elapsed = seconds_since(start);
  times.solve_s += elapsed;
  split_stack(stack, solved, W.size(0), n_hessian_rows, routing, solve_failure, elapsed, weights, sink);
}

}  // namespace

at::Tensor reduce_hessian(at::Tensor H, int64_t n_cols, c10::Device device, int64_t& n_rows,
                          dist::Communicator* comm, const std::string& what) {
  if (comm == nullptr) return H;
  // Each process's mean back to its sum (H = 2/n sum X^T X), summed over processes.
  at::Tensor sum = H.defined() ? H.mul(static_cast<double>(n_rows)) : at::zeros({n_cols, n_cols}, at::TensorOptions(device).dtype(at::kFloat));
  comm->all_reduce_sum(sum, what);
  at::Tensor rows = at::tensor({n_rows}, at::kLong);
  comm->all_reduce_sum(rows, "the row count of " + what);
  n_rows = rows.item<int64_t>();
  GPTQ_ASSERT(n_rows > 0, what, ": no process saw any row");
  return sum.div_(static_cast<double>(n_rows));
}

void quantize_group(const std::vector<std::string>& linear_names, const at::Tensor& H,
                    int64_t n_hessian_rows, const SolveContext& context,
                    model::BlockWeights& weights, const LinearSink& sink, PhaseTimes& times,
                    const model::GroupRouting* routing) {
  GPTQ_ASSERT(context.schemes != nullptr && context.format != nullptr, "solve context incomplete");
  if (routing != nullptr && routing->too_few_routed && (context.comm == nullptr || context.comm->rank() == 0)) {
    std::string names;
    for (const auto& name : linear_names) names += (names.empty() ? "" : ", ") + context.layer_prefix + name;
    spdlog::warn("{}: the router sent only {} calibration token(s) to this expert; its Hessian "
                 "comes from all {} calibration tokens instead",
                 names, routing->routed_tokens, routing->fed_tokens);
  }
  for (const Stack& stack : plan_stacks(linear_names, context, weights, sink)) {
    solve_stack(stack, H, n_hessian_rows, routing, context, weights, sink, times);
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
    SolvingObserver observer(options.solve, sink, times);
    output = model::block_forward(config, weights, hidden, rope, &observer, options.block, stats);
  } else {
    CollectingObserver collector(times, options.solve);
    model::block_forward(config, weights, hidden, rope, &collector, options.block, stats);
    for (const auto& [group_index, group] : collector.groups()) {
      quantize_group(group.names, group.H, group.n_rows, options.solve, weights, sink, times,
                     group.routing ? &*group.routing : nullptr);
    }
    output = model::block_forward(config, weights, hidden, rope, nullptr, options.block);
  }
  times.forward_s += seconds_since(start) - (times.hessian_s + times.solve_s - observed_before);
  return output;
}

void quantize_block_rtn(const model::ModelConfig& config, model::BlockWeights& weights,
                        const SolveContext& context, const LinearSink& sink, PhaseTimes& times) {
  for (const auto& group : config.layer(weights.layer).groups) {
    quantize_group(group.linears, at::Tensor(), 0, context, weights, sink, times);
  }
}

}  // namespace gptq::calib
