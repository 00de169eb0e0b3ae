// `gptq-quant server` as a process: it refuses to start without a token off
// loopback (exit 2), and serves a solve and stops on SIGTERM (exit 143).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gptq/rpc/solve_codec.h"
#include "rpc/rpc_testing.h"
#include "testing/shared_data.h"

namespace gptq::rpc {
namespace {

namespace fs = std::filesystem;

// Exit status of the binary run with `args` (stderr to `log`), -1 when it did not exit.
int run_binary(const std::string& args, const fs::path& log) {
  const std::string command = "'" + ::gptq::testing::gptq_binary().string() + "' " + args + " >/dev/null 2>'" +
                              log.string() + "'";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class ServerCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(::gptq::testing::gptq_binary())) GTEST_SKIP() << "gptq-quant binary not built (set GPTQ_BINARY)";
    dir_ = fs::temp_directory_path() / ("gptq_server_cmd_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  fs::path dir_;
};

TEST_F(ServerCommand, RefusesToStartWithoutToken) {
  const fs::path log = dir_ / "stderr.txt";
  EXPECT_EQ(run_binary("server --listen 0.0.0.0:0", log), 2);
  EXPECT_NE(read_text(log).find("--token-file"), std::string::npos) << read_text(log);
  EXPECT_EQ(run_binary("server --insecure --listen 0.0.0.0:0", log), 2);
  EXPECT_NE(read_text(log).find("loopback"), std::string::npos) << read_text(log);
  EXPECT_EQ(run_binary("server --listen 127.0.0.1:0 --token-file '" + (dir_ / "missing").string() + "'", log), 2);
  EXPECT_NE(read_text(log).find("missing"), std::string::npos) << read_text(log);
  std::ofstream(dir_ / "token") << "abc\n";
  EXPECT_EQ(run_binary("server --listen 127.0.0.1:0 --token-file '" + (dir_ / "token").string() + "' --tls-cert x",
                       log),
            2);
}

TEST_F(ServerCommand, ServesASolveAndStopsOnSigterm) {
  const fs::path token_file = dir_ / "token";
  std::ofstream(token_file) << "cli-token\n";
  fs::permissions(token_file, fs::perms::owner_read | fs::perms::owner_write);
  const int port = testing::unused_port();
  const std::string listen = testing::loopback(port);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const std::string binary = ::gptq::testing::gptq_binary().string();
    const std::string token_arg = token_file.string();
    ::execl(binary.c_str(), binary.c_str(), "-q", "server", "--listen", listen.c_str(), "--token-file",
            token_arg.c_str(), "--device", "cpu", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto job = testing::make_job(8, 32, 21);
  CallStatus status = CallStatus::of(CallCode::kUnavailable, "not tried");
  WireReply reply;
  // Until the worker is up: connection refused answers UNAVAILABLE at once
  // (a fresh channel each time, so gRPC's reconnect backoff does not add up).
  for (int attempt = 0; attempt < 600 && status.code == static_cast<int>(CallCode::kUnavailable); ++attempt) {
    reply = {};
    TransportClient client({listen, "cli-token", "", ""});
    status = client.solve(encode_request(job.W, job.H, job.config, solver::SolveMethod::kGptq), reply,
                          std::chrono::seconds(30));
    if (status.code == static_cast<int>(CallCode::kUnavailable)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(status.ok()) << code_name(status.code) << ": " << status.message;
  if (status.ok()) testing::expect_identical(decode_reply(reply, 8, 32, job.config), testing::solve_locally(job));
  ::kill(child, SIGTERM);
  int wait_status = 0;
  ASSERT_EQ(::waitpid(child, &wait_status, 0), child);
  ASSERT_TRUE(WIFEXITED(wait_status));
  EXPECT_EQ(WEXITSTATUS(wait_status), 143);
}

}  // namespace
}  // namespace gptq::rpc
