#pragma once
// RemoteSolver: the client of `gptq-quant server` workers.
//
// solve() runs exactly the call a local solve makes (gptq_quantize for GPTQ
// with H, rtn_quantize otherwise) on one of the workers, taken round-robin,
// and returns its solver::QuantizedWeight on W's device. Each attempt has
// its own deadline. A worker that is unreachable, times out, is shutting
// down, runs out of room or sends a wrong answer (reply not fitting the job)
// costs one retry and the job goes to the next worker; when every worker
// failed (or the job is one a worker refuses as malformed) it is solved
// locally, unless local fallback is off (then Error). A NumericalError on
// the worker is rethrown as NumericalError here, as the local solve would
// throw it; a refused token is an InputError (the token file is wrong, no
// worker will take it). Jobs on a named grid (GGUF) are always local.
// With local_workers = N the coordinator itself takes part in the rotation
// as N more workers: a job whose turn falls on a local slot is solved here
// while fewer than N such jobs are running here, else it goes to the workers.
// Thread-safe: several threads may solve at once.
#include <ATen/core/Tensor.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gptq/rpc/transport.h"
#include "gptq/solver/gptq.h"
#include "gptq/solver/scheme.h"

namespace gptq::rpc {

struct RemoteSolverOptions {
  std::vector<std::string> workers;  // "HOST:PORT", at least one
  std::string token;
  std::string tls_ca_pem;            // empty: plaintext
  std::string tls_server_name;       // overrides the certificate name checked (tests)
  std::chrono::milliseconds deadline = std::chrono::minutes(30);  // per attempt
  bool local_fallback = true;
  int local_workers = 0;             // local slots in the rotation (at most this many local solves at once)
};

struct WorkerStats {
  std::string address;
  int64_t jobs_sent = 0;    // attempts sent to it
  int64_t jobs_solved = 0;  // of which answered correctly
  int64_t failures = 0;     // of which failed (each one a retry elsewhere or locally)
};

class RemoteSolver {
 public:
  // InputError when `options.workers` is empty.
  explicit RemoteSolver(RemoteSolverOptions options);
  ~RemoteSolver();

  // `config` as the local call takes it (solve_config(base, scheme), its grid set or null).
  solver::QuantizedWeight solve(const at::Tensor& W, const at::Tensor& H, const solver::GptqConfig& config,
                                solver::SolveMethod method);

  std::vector<WorkerStats> stats() const;
  int64_t retries() const { return retries_.load(); }
  int64_t local_solves() const { return local_solves_.load(); }  // fallbacks after failures or refusals
  int64_t local_jobs() const { return local_jobs_.load(); }      // jobs whose turn fell on a local slot

 private:
  struct Worker;
  solver::QuantizedWeight solve_locally(const at::Tensor& W, const at::Tensor& H, const solver::GptqConfig& config,
                                        solver::SolveMethod method);
  // A local slot when this ticket's turn is one and a slot is free (released by the caller).
  bool take_local_slot(uint64_t ticket);

  RemoteSolverOptions options_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<uint64_t> next_{0};
  std::atomic<int64_t> retries_{0};
  std::atomic<int64_t> local_solves_{0};
  std::atomic<int64_t> local_jobs_{0};
  std::atomic<int> local_busy_{0};
};

}  // namespace gptq::rpc
