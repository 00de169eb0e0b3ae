#include "gptq/rpc/remote_solver.h"

#include <algorithm>

#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/rpc/solve_codec.h"

namespace gptq::rpc {

struct RemoteSolver::Worker {
  explicit Worker(const ChannelConfig& config) : client(config) {}
  TransportClient client;
  std::atomic<int64_t> jobs_sent{0};
  std::atomic<int64_t> jobs_solved{0};
  std::atomic<int64_t> failures{0};
  std::atomic<int64_t> consecutive_failures{0};
};

RemoteSolver::RemoteSolver(RemoteSolverOptions options) : options_(std::move(options)) {
  GPTQ_CHECK(!options_.workers.empty(), "--workers: no worker address given");
  GPTQ_CHECK(options_.local_workers >= 0, "--local-workers must be >= 0, got ", options_.local_workers);
  for (const auto& address : options_.workers) {
    ChannelConfig config{address, options_.token, options_.tls_ca_pem, options_.tls_server_name};
    workers_.push_back(std::make_unique<Worker>(config));
  }
}

RemoteSolver::~RemoteSolver() = default;

std::vector<WorkerStats> RemoteSolver::stats() const {
  std::vector<WorkerStats> out;
  for (const auto& worker : workers_) {
    out.push_back({worker->client.address(), worker->jobs_sent.load(), worker->jobs_solved.load(),
                   worker->failures.load()});
  }
  return out;
}

solver::QuantizedWeight RemoteSolver::solve_locally(const at::Tensor& W, const at::Tensor& H,
                                                    const solver::GptqConfig& config, solver::SolveMethod method) {
  ++local_solves_;
  return H.defined() && method == solver::SolveMethod::kGptq ? solver::gptq_quantize(W, H, config)
                                                             : solver::rtn_quantize(W, config, H);
}

bool RemoteSolver::take_local_slot(uint64_t ticket) {
  const uint64_t slots = workers_.size() + static_cast<uint64_t>(options_.local_workers);
  if (options_.local_workers == 0 || ticket % slots < workers_.size()) return false;
  int busy = local_busy_.load();
  while (busy < options_.local_workers && !local_busy_.compare_exchange_weak(busy, busy + 1)) {
  }
  return busy < options_.local_workers;
}

solver::QuantizedWeight RemoteSolver::solve(const at::Tensor& W, const at::Tensor& H,
                                            const solver::GptqConfig& config, solver::SolveMethod method) {
  if (config.grid) return solve_locally(W, H, config, method);
  const solver::SolveMethod sent_method = H.defined() ? method : solver::SolveMethod::kRtn;
  const uint64_t ticket = next_++;
  if (take_local_slot(ticket)) {
    struct Release {
      std::atomic<int>& busy;
      ~Release() { --busy; }
    } release{local_busy_};
    ++local_jobs_;
    return H.defined() && method == solver::SolveMethod::kGptq ? solver::gptq_quantize(W, H, config)
                                                               : solver::rtn_quantize(W, config, H);
  }
  const WireRequest request = encode_request(W, H, config, sent_method);
  // Round-robin start; workers whose last call failed go to the back.
  const size_t n_workers = workers_.size();
  const size_t first = ticket % (n_workers + static_cast<size_t>(options_.local_workers)) % n_workers;
  std::vector<size_t> order;
  for (size_t offset = 0; offset < n_workers; ++offset) order.push_back((first + offset) % n_workers);
  std::stable_partition(order.begin(), order.end(),
                        [&](size_t index) { return workers_[index]->consecutive_failures.load() == 0; });
  std::string last_failure = "no worker tried";
  for (size_t attempt = 0; attempt < order.size(); ++attempt) {
    Worker& worker = *workers_[order[attempt]];
    ++worker.jobs_sent;
    WireReply reply;
    const CallStatus status = worker.client.solve(request, reply, options_.deadline);
    if (status.ok()) {
      try {
        solver::QuantizedWeight solved = decode_reply(reply, W.size(0), W.size(1), config);
        ++worker.jobs_solved;
        worker.consecutive_failures = 0;
        for (at::Tensor* tensor : {&solved.codes, &solved.scales, &solved.zeros, &solved.grid_zeros, &solved.g_idx,
                                   &solved.dequantized, &solved.row_loss, &solved.zero_raised}) {
          *tensor = tensor->to(W.device());
        }
        return solved;
      } catch (const Error& e) {
        last_failure = worker.client.address() + ": wrong answer: " + e.what();
      }
    } else if (status.code == static_cast<int>(CallCode::kUnauthenticated)) {
      throw InputError("worker " + worker.client.address() + " refused the token (--worker-token-file): " +
                       status.message);
    } else if (status.code == static_cast<int>(CallCode::kFailedPrecondition)) {
      ++worker.jobs_solved;  // it answered: the job itself fails numerically
      const std::string prefix = "numerical failure: ";
      const bool prefixed = status.message.rfind(prefix, 0) == 0;
      throw NumericalError(prefixed ? status.message.substr(prefix.size()) : status.message);
    } else if (status.code == static_cast<int>(CallCode::kInvalidArgument)) {
      // The worker finds the job malformed: every worker would; the local
      // solve reports it as a local run does.
      ++worker.failures;
      ++retries_;
      spdlog::warn("worker {} refused a job ({}); solving it locally", worker.client.address(), status.message);
      return solve_locally(W, H, config, method);
    } else {
      last_failure = worker.client.address() + ": " + code_name(status.code) + ": " + status.message;
    }
    ++worker.failures;
    ++worker.consecutive_failures;
    ++retries_;
    spdlog::warn("solve worker {} failed ({}); re-queueing the job", worker.client.address(), last_failure);
  }
  if (!options_.local_fallback) throw Error("every solve worker failed; last: " + last_failure);
  return solve_locally(W, H, config, method);
}

}  // namespace gptq::rpc
