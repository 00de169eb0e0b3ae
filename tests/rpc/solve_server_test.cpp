// The worker over real gRPC on loopback: authentication, limits, malformed
// input, fuzzing, TLS, and byte-identical results to a local solve.
#include "gptq/rpc/solve_server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <unistd.h>

#include "gptq/rpc/remote_solver.h"
#include "gptq/rpc/solve_codec.h"
#include "rpc/rpc_testing.h"

namespace gptq::rpc {
namespace {

using testing::Job;
using testing::make_job;
constexpr auto kDeadline = std::chrono::seconds(60);
constexpr const char* kToken = "s3cret-token";

std::unique_ptr<SolveServer> start_server(int64_t max_bytes = int64_t{64} << 20, std::string token = kToken) {
  SolveServerOptions options;
  options.token = std::move(token);
  options.max_request_bytes = max_bytes;
  return std::make_unique<SolveServer>(options);
}

WireRequest request_of(const Job& job) { return encode_request(job.W, job.H, job.config, solver::SolveMethod::kGptq); }

CallStatus call(const SolveServer& server, const WireRequest& request, WireReply& reply, std::string token = kToken) {
  TransportClient client({testing::loopback(server.port()), std::move(token), "", ""});
  return client.solve(request, reply, kDeadline);
}

void expect_valid_request_answered(const SolveServer& server) {
  const Job job = make_job(8, 32, 99);
  WireReply reply;
  const CallStatus status = call(server, request_of(job), reply);
  ASSERT_TRUE(status.ok()) << code_name(status.code) << ": " << status.message;
  testing::expect_identical(decode_reply(reply, 8, 32, job.config), testing::solve_locally(job));
}

TEST(SolveServer, RemoteSolveIsByteIdenticalToLocal) {
  auto server = start_server();
  // 2.6 MiB of W: several chunks; a ragged last group (392 % 16 != 0).
  const Job job = make_job(1700, 392, 1);
  WireReply reply;
  const CallStatus status = call(*server, request_of(job), reply);
  ASSERT_TRUE(status.ok()) << status.message;
  testing::expect_identical(decode_reply(reply, 1700, 392, job.config), testing::solve_locally(job));
  EXPECT_EQ(server->jobs_solved(), 1);
}

TEST(SolveServer, RtnWithAndWithoutHessianMatchesLocal) {
  auto server = start_server();
  Job job = make_job(16, 48, 2);
  job.config.quant = {3, -1, true, false, 0};
  for (const bool with_h : {true, false}) {
    const at::Tensor H = with_h ? job.H : at::Tensor();
    WireReply reply;
    const CallStatus status = call(*server, encode_request(job.W, H, job.config, solver::SolveMethod::kRtn), reply);
    ASSERT_TRUE(status.ok()) << status.message;
    testing::expect_identical(decode_reply(reply, 16, 48, job.config), solver::rtn_quantize(job.W, job.config, H));
  }
}

TEST(SolveServer, MissingOrWrongTokenIsUnauthenticated) {
  auto server = start_server();
  const WireRequest request = request_of(make_job(4, 16, 3));
  for (const std::string token : {"", "wrong", "s3cret-toke", "s3cret-token-and-more"}) {
    WireReply reply;
    EXPECT_EQ(call(*server, request, reply, token).code, static_cast<int>(CallCode::kUnauthenticated)) << token;
  }
  EXPECT_EQ(server->jobs_solved(), 0);
  WireReply reply;
  EXPECT_TRUE(call(*server, request, reply).ok());
}

TEST(SolveServer, OversizeRequestIsResourceExhausted) {
  auto server = start_server(int64_t{1} << 20);
  const Job job = make_job(512, 1024, 4);  // 2 MiB of W
  WireReply reply;
  EXPECT_EQ(call(*server, request_of(job), reply).code, static_cast<int>(CallCode::kResourceExhausted));
  // One frame above gRPC's per-message limit is refused by gRPC itself: a
  // Frame whose chunk (field 2, length-delimited) holds 3 MiB, encoded by hand.
  const size_t n_bytes = size_t{3} << 20;
  std::string frame = "\x12";
  for (size_t rest = n_bytes; ; rest >>= 7) {
    frame += static_cast<char>((rest & 0x7f) | (rest >= 0x80 ? 0x80 : 0));
    if (rest < 0x80) break;
  }
  frame += std::string(n_bytes, 'x');
  const std::vector<std::string> frames = {encode_frames(request_of(make_job(4, 16, 5))).front(), frame};
  TransportClient client({testing::loopback(server->port()), kToken, "", ""});
  EXPECT_EQ(client.solve_frames(frames, kDeadline).code, static_cast<int>(CallCode::kResourceExhausted));
  expect_valid_request_answered(*server);
}

TEST(SolveServer, MalformedTensorsAreInvalidArgumentAndTheServerGoesOn) {
  auto server = start_server();
  const Job job = make_job(8, 32, 6);
  auto mutated = [&](auto&& mutate) {
    WireRequest request = request_of(job);
    mutate(request);
    return request;
  };
  const std::vector<std::pair<std::string, WireRequest>> cases = {
      {"NaN in W", mutated([](WireRequest& r) {
         float nan = std::numeric_limits<float>::quiet_NaN();
         std::memcpy(r.tensors[0].bytes.data() + 12, &nan, sizeof(nan));
       })},
      {"Inf in H", mutated([](WireRequest& r) {
         float inf = std::numeric_limits<float>::infinity();
         std::memcpy(r.tensors[1].bytes.data(), &inf, sizeof(inf));
       })},
      {"H not [cols, cols]", encode_request(job.W, job.H.narrow(1, 0, 31).contiguous(), job.config,
                                            solver::SolveMethod::kGptq)},
      {"H for other cols", encode_request(job.W.narrow(1, 0, 16).contiguous(), job.H, job.config,
                                          solver::SolveMethod::kGptq)},
      {"W int32", encode_request(job.W.to(at::kInt), job.H, job.config, solver::SolveMethod::kGptq)},
      {"H int64", mutated([&](WireRequest& r) {
         r.tensors[1] = WireTensor{"H", WireDType::kInt64, {32, 32}, r.tensors[1].bytes + r.tensors[1].bytes};
       })},
      {"W 1-D", mutated([](WireRequest& r) { r.tensors[0].shape = {8 * 32}; })},
      {"fewer bytes than the shape", mutated([](WireRequest& r) { r.tensors[0].bytes.resize(100); })},
      {"more bytes than the shape", mutated([](WireRequest& r) { r.tensors[1].bytes += "abcd"; })},
      {"unknown dtype", mutated([](WireRequest& r) { r.tensors[0].dtype = static_cast<WireDType>(42); })},
      {"no H for GPTQ", mutated([](WireRequest& r) { r.tensors.pop_back(); })},
      {"bits 5", mutated([](WireRequest& r) { r.settings.bits = 5; })},
      {"unknown method", mutated([](WireRequest& r) { r.settings.method = "awq"; })},
      {"named grid", mutated([](WireRequest& r) { r.settings.grid = "q4_K"; })},
      {"NaN damping", mutated([](WireRequest& r) { r.settings.damp_percent = std::nan(""); })},
  };
  for (const auto& [what, request] : cases) {
    SCOPED_TRACE(what);
    WireReply reply;
    const CallStatus status = call(*server, request, reply);
    EXPECT_EQ(status.code, static_cast<int>(CallCode::kInvalidArgument)) << code_name(status.code) << ": "
                                                                          << status.message;
    expect_valid_request_answered(*server);
  }
}

TEST(SolveServer, AsymmetricHessianIsANumericalFailure) {
  auto server = start_server();
  Job job = make_job(8, 32, 7);
  job.H.index_put_({0, 5}, job.H.index({0, 5}) + 1.0);
  WireReply reply;
  const CallStatus status = call(*server, request_of(job), reply);
  EXPECT_EQ(status.code, static_cast<int>(CallCode::kFailedPrecondition));
  EXPECT_EQ(status.message.rfind("numerical failure: ", 0), 0u) << status.message;
}

TEST(SolveServer, FuzzedRequestsNeverCrashTheWorker) {
  auto server = start_server();
  const Job job = make_job(8, 32, 8);
  const std::vector<std::string> valid = encode_frames(request_of(job));
  ASSERT_EQ(valid.size(), 3u);  // header, W's chunk, H's chunk
  std::mt19937_64 rng(12345);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  TransportClient client({testing::loopback(server->port()), kToken, "", ""});
  std::map<int, int> codes;
  for (int iteration = 0; iteration < 2000; ++iteration) {
    std::vector<std::string> frames = valid;
    const int n_mutations = 1 + static_cast<int>(pick(4));
    for (int m = 0; m < n_mutations; ++m) {
      // Mostly the header: its fields are what a hostile client controls.
      std::string& frame = frames[pick(4) == 0 && frames.size() > 1 ? 1 + pick(frames.size() - 1) : 0];
      switch (pick(6)) {
        case 0:  // flip bits
        case 1:
          if (!frame.empty()) frame[pick(frame.size())] ^= static_cast<char>(1 + pick(255));
          break;
        case 2:  // truncate
          frame.resize(pick(frame.size() + 1));
          break;
        case 3:  // insert random bytes
          frame.insert(pick(frame.size() + 1), std::string(1 + pick(8), static_cast<char>(rng())));
          break;
        case 4:  // drop, duplicate or swap frames
          if (pick(2) == 0 && !frames.empty()) frames.erase(frames.begin() + static_cast<long>(pick(frames.size())));
          else frames.push_back(frames[pick(frames.size())]);
          if (frames.empty()) frames.push_back("");
          break;
        default:  // a random float into the payload
          if (frames.size() > 1) {
            std::string& chunk = frames[1 + pick(frames.size() - 1)];
            const float values[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                    1e38f, -0.0f, 1e-45f};
            if (chunk.size() > 16) std::memcpy(chunk.data() + 8 + pick(chunk.size() - 12), &values[pick(5)], 4);
          }
          break;
      }
    }
    const CallStatus status = client.solve_frames(frames, kDeadline);
    ++codes[status.code];
    ASSERT_TRUE(status.ok() || status.code == static_cast<int>(CallCode::kInvalidArgument) ||
                status.code == static_cast<int>(CallCode::kResourceExhausted) ||
                status.code == static_cast<int>(CallCode::kFailedPrecondition))
        << "iteration " << iteration << ": " << code_name(status.code) << ": " << status.message;
  }
  std::ostringstream summary;
  for (const auto& [code, count] : codes) summary << code_name(code) << "=" << count << " ";
  std::cout << "fuzz outcomes: " << summary.str() << "\n";
  EXPECT_GT(codes[0], 0);
  EXPECT_GT(codes[static_cast<int>(CallCode::kInvalidArgument)], 0);
  expect_valid_request_answered(*server);
}

// A self-signed certificate for "localhost" made with the openssl CLI.
struct TlsFiles {
  std::string cert_pem;
  std::string key_pem;
};

std::optional<TlsFiles> make_self_signed(const std::filesystem::path& dir) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) return std::nullopt;
  const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                              "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout '" +
                              (dir / "key.pem").string() + "' -out '" + (dir / "cert.pem").string() +
                              "' >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0) return std::nullopt;
  auto read = [](const std::filesystem::path& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  return TlsFiles{read(dir / "cert.pem"), read(dir / "key.pem")};
}

TEST(SolveServer, TlsRoundTrip) {
  const auto dir = std::filesystem::temp_directory_path() / ("gptq_rpc_tls_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto tls = make_self_signed(dir);
  std::filesystem::remove_all(dir);
  if (!tls) GTEST_SKIP() << "openssl CLI not found or failed: cannot make a self-signed certificate";
  SolveServerOptions options;
  options.token = kToken;
  options.tls_cert_pem = tls->cert_pem;
  options.tls_key_pem = tls->key_pem;
  SolveServer server(options);
  const Job job = make_job(8, 32, 9);
  WireReply reply;
  TransportClient tls_client({testing::loopback(server.port()), kToken, tls->cert_pem, "localhost"});
  const CallStatus status = tls_client.solve(request_of(job), reply, kDeadline);
  ASSERT_TRUE(status.ok()) << code_name(status.code) << ": " << status.message;
  testing::expect_identical(decode_reply(reply, 8, 32, job.config), testing::solve_locally(job));
  // RemoteSolver over TLS, with no local fallback to hide a failure.
  RemoteSolverOptions remote_options;
  remote_options.workers = {testing::loopback(server.port())};
  remote_options.token = kToken;
  remote_options.tls_ca_pem = tls->cert_pem;
  remote_options.tls_server_name = "localhost";
  remote_options.local_fallback = false;
  RemoteSolver remote(remote_options);
  testing::expect_identical(remote.solve(job.W, job.H, job.config, solver::SolveMethod::kGptq),
                            testing::solve_locally(job));
  // A plaintext client gets no answer from a TLS worker.
  WireReply plain_reply;
  EXPECT_FALSE(call(server, request_of(job), plain_reply).ok());
}

TEST(SolveServer, LoopbackAddresses) {
  EXPECT_TRUE(is_loopback("127.0.0.1:5000"));
  EXPECT_TRUE(is_loopback("127.1.2.3:0"));
  EXPECT_TRUE(is_loopback("localhost:80"));
  EXPECT_TRUE(is_loopback("[::1]:9000"));
  EXPECT_FALSE(is_loopback("0.0.0.0:5000"));
  EXPECT_FALSE(is_loopback("[::]:5000"));
  EXPECT_FALSE(is_loopback("127.evil.example:5000"));
  EXPECT_FALSE(is_loopback("10.0.0.1:5000"));
  EXPECT_FALSE(is_loopback("5000"));
}

}  // namespace
}  // namespace gptq::rpc
