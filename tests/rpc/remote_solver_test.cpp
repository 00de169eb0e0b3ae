// RemoteSolver against live, dead and stopping workers on loopback.
#include "gptq/rpc/remote_solver.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "gptq/core/error.h"
#include "gptq/rpc/solve_codec.h"
#include "gptq/rpc/solve_server.h"
#include "rpc/rpc_testing.h"

namespace gptq::rpc {
namespace {

using testing::make_job;
constexpr const char* kToken = "remote-token";

std::unique_ptr<SolveServer> start_server(std::function<void()> on_job = {}) {
  SolveServerOptions options;
  options.token = kToken;
  options.on_job_received = std::move(on_job);
  return std::make_unique<SolveServer>(options);
}

RemoteSolverOptions options_for(std::vector<std::string> workers) {
  RemoteSolverOptions options;
  options.workers = std::move(workers);
  options.token = kToken;
  options.deadline = std::chrono::seconds(60);
  return options;
}

TEST(RemoteSolver, DeadWorkerIsRetriedOnTheLiveOne) {
  auto live = start_server();
  const std::string dead = testing::loopback(testing::unused_port());
  RemoteSolver remote(options_for({dead, testing::loopback(live->port())}));
  for (uint64_t seed = 0; seed < 3; ++seed) {
    const auto job = make_job(24, 64, 100 + seed);
    testing::expect_identical(remote.solve(job.W, job.H, job.config, solver::SolveMethod::kGptq),
                              testing::solve_locally(job));
  }
  const auto stats = remote.stats();
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats[0].address, dead);
  EXPECT_GE(stats[0].failures, 1);
  EXPECT_EQ(stats[0].jobs_solved, 0);
  EXPECT_EQ(stats[1].jobs_solved, 3);
  EXPECT_GE(remote.retries(), 1);
  EXPECT_EQ(remote.retries(), stats[0].failures);
  EXPECT_EQ(remote.local_solves(), 0);
  EXPECT_EQ(live->jobs_solved(), 3);
}

TEST(RemoteSolver, LocalWorkersTakeTheirTurnsInTheRotation) {
  auto live = start_server();
  RemoteSolverOptions options = options_for({testing::loopback(live->port())});
  options.local_workers = 1;
  RemoteSolver remote(options);
  // One worker and one local slot: turns alternate remote, local, remote, local.
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const auto job = make_job(16, 48, 300 + seed);
    testing::expect_identical(remote.solve(job.W, job.H, job.config, solver::SolveMethod::kGptq),
                              testing::solve_locally(job));
  }
  EXPECT_EQ(live->jobs_solved(), 2);
  EXPECT_EQ(remote.local_jobs(), 2);
  EXPECT_EQ(remote.local_solves(), 0);
  EXPECT_EQ(remote.retries(), 0);
  options.local_workers = -1;
  EXPECT_THROW(RemoteSolver{options}, InputError);
}

TEST(RemoteSolver, NoLiveWorkerSolvesLocallyOrFails) {
  const auto job = make_job(8, 32, 7);
  RemoteSolver remote(options_for({testing::loopback(testing::unused_port())}));
  testing::expect_identical(remote.solve(job.W, job.H, job.config, solver::SolveMethod::kGptq),
                            testing::solve_locally(job));
  EXPECT_EQ(remote.local_solves(), 1);
  EXPECT_EQ(remote.retries(), 1);

  auto strict_options = options_for({testing::loopback(testing::unused_port())});
  strict_options.local_fallback = false;
  RemoteSolver strict(strict_options);
  EXPECT_THROW(strict.solve(job.W, job.H, job.config, solver::SolveMethod::kGptq), Error);
}

TEST(RemoteSolver, WorkerStoppedMidJobIsRequeued) {
  std::atomic<bool> arrived{false};
  std::atomic<SolveServer*> stopping_server{nullptr};
  // The first worker holds its job until it is told to shut down, so the
  // job is in flight when the worker stops.
  auto doomed = start_server([&] {
    arrived = true;
    for (int waited_ms = 0; waited_ms < 30000; waited_ms += 5) {
      SolveServer* server = stopping_server.load();
      if (server != nullptr && server->stopping()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  stopping_server = doomed.get();
  auto live = start_server();
  RemoteSolver remote(options_for({testing::loopback(doomed->port()), testing::loopback(live->port())}));
  const auto job = make_job(16, 64, 11);
  auto result = std::async(std::launch::async,
                           [&] { return remote.solve(job.W, job.H, job.config, solver::SolveMethod::kGptq); });
  while (!arrived) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  doomed->shutdown(std::chrono::seconds(10));
  testing::expect_identical(result.get(), testing::solve_locally(job));
  const auto stats = remote.stats();
  EXPECT_EQ(stats[0].failures, 1);
  EXPECT_EQ(stats[1].jobs_solved, 1);
  EXPECT_EQ(remote.retries(), 1);
  EXPECT_EQ(remote.local_solves(), 0);
}

TEST(RemoteSolver, WrongAnswerIsRequeued) {
  // A worker that answers every job with a reply that does not fit it.
  ServerConfig liar_config;
  liar_config.listen = "127.0.0.1:0";
  liar_config.token = kToken;
  TransportServer liar(
      liar_config,
      [](const WireRequest& request, WireReply& reply) {
        reply.tensors.push_back(to_wire("codes", at::zeros({1, 1}, at::kByte)));
        return CallStatus{};
      },
      {});
  auto live = start_server();
  RemoteSolver remote(options_for({testing::loopback(liar.port()), testing::loopback(live->port())}));
  const auto job = make_job(8, 32, 15);
  testing::expect_identical(remote.solve(job.W, job.H, job.config, solver::SolveMethod::kGptq),
                            testing::solve_locally(job));
  const auto stats = remote.stats();
  EXPECT_EQ(stats[0].failures, 1);
  EXPECT_EQ(stats[0].jobs_solved, 0);
  EXPECT_EQ(stats[1].jobs_solved, 1);
  EXPECT_EQ(remote.retries(), 1);
}

TEST(RemoteSolver, WrongTokenIsAnInputError) {
  auto live = start_server();
  auto options = options_for({testing::loopback(live->port())});
  options.token = "not-the-token";
  RemoteSolver remote(options);
  const auto job = make_job(8, 32, 12);
  EXPECT_THROW(remote.solve(job.W, job.H, job.config, solver::SolveMethod::kGptq), InputError);
}

TEST(RemoteSolver, WorkerNumericalFailureIsANumericalError) {
  auto live = start_server();
  RemoteSolver remote(options_for({testing::loopback(live->port())}));
  auto job = make_job(8, 32, 13);
  job.H.index_put_({0, 5}, job.H.index({0, 5}) + 1.0);  // not symmetric
  EXPECT_THROW(remote.solve(job.W, job.H, job.config, solver::SolveMethod::kGptq), NumericalError);
  EXPECT_EQ(remote.local_solves(), 0);
}

TEST(RemoteSolver, RtnWithoutHessianMatchesLocal) {
  auto live = start_server();
  RemoteSolver remote(options_for({testing::loopback(live->port())}));
  auto job = make_job(8, 32, 14);
  job.config.quant = {8, -1, false, false, 1};
  testing::expect_identical(remote.solve(job.W, at::Tensor(), job.config, solver::SolveMethod::kGptq),
                            solver::rtn_quantize(job.W, job.config, at::Tensor()));
  EXPECT_EQ(live->jobs_solved(), 1);
}

}  // namespace
}  // namespace gptq::rpc
