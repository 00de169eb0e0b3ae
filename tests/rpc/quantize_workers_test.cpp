// `gptq-quant quantize --workers`: every layer solved on a worker (one of the
// two listed is dead), or the live worker taking turns with --local-workers 1,
// gives the same checkpoint, byte for byte, as a local run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gptq/rpc/solve_codec.h"
#include "gptq/rpc/solve_server.h"
#include "gptq/rpc/transport.h"
#include "rpc/rpc_testing.h"
#include "testing/shared_data.h"

namespace gptq::rpc {
namespace {

namespace fs = std::filesystem;

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int run_quantize(const std::string& args, const fs::path& log) {
  const std::string command = "'" + ::gptq::testing::gptq_binary().string() + "' " + args + " >/dev/null 2>'" +
                              log.string() + "'";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(QuantizeWorkers, RemoteRunMatchesLocalRunByteForByte) {
  if (!fs::exists(::gptq::testing::gptq_binary())) GTEST_SKIP() << "gptq-quant binary not built (set GPTQ_BINARY)";
  GPTQ_REQUIRE_SHARED_DATA(data);
  const fs::path model = data / "stories260k-hf";
  const fs::path calib = data / "tinystories-valid" / "tinystories_val.txt";
  if (!fs::exists(model / "config.json") || !fs::exists(calib)) GTEST_SKIP() << "stories260k-hf fixture absent";
  const fs::path dir = fs::temp_directory_path() / ("gptq_quantize_workers_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "token") << "e2e-token\n";
  fs::permissions(dir / "token", fs::perms::owner_read | fs::perms::owner_write);

  SolveServerOptions options;
  options.token = "e2e-token";
  SolveServer worker(options);
  const std::string common = "quantize --model '" + model.string() + "' --calib '" + calib.string() +
                             "' --device cpu --nsamples 8 --seqlen 64 --bits 4 --group-size 32 --desc-act";
  ASSERT_EQ(run_quantize(common + " --output '" + (dir / "local").string() + "'", dir / "local.log"), 0)
      << read_bytes(dir / "local.log");
  const std::string workers = testing::loopback(testing::unused_port()) + "," + testing::loopback(worker.port());
  ASSERT_EQ(run_quantize(common + " --output '" + (dir / "remote").string() + "' --workers " + workers +
                             " --worker-token-file '" + (dir / "token").string() + "' --report '" +
                             (dir / "report.json").string() + "'",
                         dir / "remote.log"),
            0)
      << read_bytes(dir / "remote.log");

  // The live worker alone plus one local slot: jobs alternate between them.
  const int64_t solved_before = worker.jobs_solved();
  ASSERT_EQ(run_quantize(common + " --output '" + (dir / "shared").string() + "' --workers " +
                             testing::loopback(worker.port()) + " --local-workers 1 --worker-token-file '" +
                             (dir / "token").string() + "' --report '" + (dir / "shared.json").string() + "'",
                         dir / "shared.log"),
            0)
      << read_bytes(dir / "shared.log");
  const auto shared = nlohmann::json::parse(read_bytes(dir / "shared.json")).at("remote_solve");
  EXPECT_GT(shared.at("local_jobs").get<int64_t>(), 0);
  EXPECT_GT(worker.jobs_solved(), solved_before);
  EXPECT_EQ(shared.at("retries").get<int64_t>(), 0);

  size_t n_files = 0;
  for (const auto& entry : fs::directory_iterator(dir / "local")) {
    SCOPED_TRACE(entry.path().filename().string());
    for (const char* run : {"remote", "shared"}) {
      const fs::path twin = dir / run / entry.path().filename();
      ASSERT_TRUE(fs::exists(twin)) << run;
      EXPECT_TRUE(read_bytes(entry.path()) == read_bytes(twin)) << run;
    }
    ++n_files;
  }
  EXPECT_GT(n_files, 0u);
  const auto report = nlohmann::json::parse(read_bytes(dir / "report.json"));
  const auto& remote = report.at("remote_solve");
  EXPECT_GE(remote.at("retries").get<int64_t>(), 1);  // the dead worker's first job
  EXPECT_EQ(remote.at("local_solves").get<int64_t>(), 0);
  EXPECT_EQ(remote.at("workers").at(1).at("jobs_solved").get<int64_t>(), solved_before);
  EXPECT_GT(solved_before, 0);
  EXPECT_EQ(shared.at("workers").at(0).at("jobs_solved").get<int64_t>(), worker.jobs_solved() - solved_before);
  fs::remove_all(dir);
}

// A `gptq-quant server` process that kills itself with SIGKILL when its
// second job arrives (GPTQ_FAULT_POINT=worker-job:2; the first is the
// readiness probe): the quantize run re-queues that job on the live worker
// and still writes the local run's bytes.
TEST(QuantizeWorkers, WorkerKilledMidJobIsRequeuedAndTheOutputIsUnchanged) {
  if (!fs::exists(::gptq::testing::gptq_binary())) GTEST_SKIP() << "gptq-quant binary not built (set GPTQ_BINARY)";
  GPTQ_REQUIRE_SHARED_DATA(data);
  const fs::path model = data / "stories260k-hf";
  const fs::path calib = data / "tinystories-valid" / "tinystories_val.txt";
  if (!fs::exists(model / "config.json") || !fs::exists(calib)) GTEST_SKIP() << "stories260k-hf fixture absent";
  const fs::path dir = fs::temp_directory_path() / ("gptq_worker_killed_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "token") << "e2e-token\n";
  fs::permissions(dir / "token", fs::perms::owner_read | fs::perms::owner_write);

  const std::string doomed = testing::loopback(testing::unused_port());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setenv("GPTQ_FAULT_POINT", "worker-job:2", 1);
    const std::string binary = ::gptq::testing::gptq_binary().string();
    const std::string token = (dir / "token").string();
    ::execl(binary.c_str(), binary.c_str(), "-q", "server", "--listen", doomed.c_str(), "--token-file", token.c_str(),
            "--device", "cpu", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // The readiness probe is the doomed worker's first job.
  const auto probe = testing::make_job(8, 32, 5);
  CallStatus status = CallStatus::of(CallCode::kUnavailable, "not tried");
  for (int attempt = 0; attempt < 600 && status.code == static_cast<int>(CallCode::kUnavailable); ++attempt) {
    WireReply reply;
    TransportClient client({doomed, "e2e-token", "", ""});
    status = client.solve(encode_request(probe.W, probe.H, probe.config, solver::SolveMethod::kGptq), reply,
                          std::chrono::seconds(30));
    if (status.code == static_cast<int>(CallCode::kUnavailable)) ::usleep(100 * 1000);
  }
  ASSERT_TRUE(status.ok()) << code_name(status.code) << ": " << status.message;

  SolveServerOptions options;
  options.token = "e2e-token";
  SolveServer live(options);
  const std::string common = "quantize --model '" + model.string() + "' --calib '" + calib.string() +
                             "' --device cpu --nsamples 8 --seqlen 64 --bits 4 --group-size 32";
  ASSERT_EQ(run_quantize(common + " --output '" + (dir / "local").string() + "'", dir / "local.log"), 0)
      << read_bytes(dir / "local.log");
  ASSERT_EQ(run_quantize(common + " --output '" + (dir / "remote").string() + "' --workers " + doomed + "," +
                             testing::loopback(live.port()) + " --worker-token-file '" + (dir / "token").string() +
                             "' --report '" + (dir / "report.json").string() + "'",
                         dir / "remote.log"),
            0)
      << read_bytes(dir / "remote.log");
  int wait_status = 0;
  ASSERT_EQ(::waitpid(child, &wait_status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(wait_status));
  EXPECT_EQ(WTERMSIG(wait_status), SIGKILL);

  for (const auto& entry : fs::directory_iterator(dir / "local")) {
    SCOPED_TRACE(entry.path().filename().string());
    EXPECT_TRUE(read_bytes(entry.path()) == read_bytes(dir / "remote" / entry.path().filename()));
  }
  const auto remote = nlohmann::json::parse(read_bytes(dir / "report.json")).at("remote_solve");
  EXPECT_GE(remote.at("workers").at(0).at("failures").get<int64_t>(), 1);  // the job it died on
  EXPECT_EQ(remote.at("local_solves").get<int64_t>(), 0);                  // the live worker took it
  EXPECT_EQ(remote.at("workers").at(1).at("jobs_solved").get<int64_t>(), live.jobs_solved());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gptq::rpc
