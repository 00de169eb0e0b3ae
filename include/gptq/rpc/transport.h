#pragma once
// The gRPC transport of the layer-solve worker, in plain C++ types.
//
// This header and src/rpc/transport/ are the only places that see gRPC and
// protobuf, and they never see libtorch: torch's include directory ships its
// own protobuf headers, which would shadow the system ones the generated code
// needs. gptq_rpc (solve_codec.h, solve_server.h, remote_solver.h) maps
// tensors to and from these structs.
//
// Wire format (src/rpc/solve.proto): one Solve call per job, a Header frame
// then the tensors' raw bytes in Chunk frames of kChunkBytes; the reply comes
// back the same way. Authentication is a bearer token in the metadata
// ("authorization: Bearer <token>"), compared in constant time; TLS when the
// server has a certificate and key.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace gptq::rpc {

// Bytes per Chunk frame.
inline constexpr size_t kChunkBytes = size_t{1} << 20;

// Values of the wire DType enum.
enum class WireDType : int { kUnspecified = 0, kFloat32 = 1, kFloat16 = 2, kBFloat16 = 3, kUInt8 = 4, kInt32 = 5, kInt64 = 6 };

// Bytes per element; 0 for kUnspecified or an unknown value.
size_t element_size(WireDType dtype);

// One tensor on the wire: bytes holds exactly numel * element_size bytes
// (checked by the transport before a handler sees it).
struct WireTensor {
  std::string name;
  WireDType dtype = WireDType::kUnspecified;
  std::vector<int64_t> shape;
  std::string bytes;
};

// solver::GptqConfig and solver::Scheme's settings (see solve.proto).
struct WireSettings {
  int bits = 4;
  int group_size = 128;
  bool sym = true;
  bool mse = false;
  int min_zero = 0;
  bool desc_act = false;
  bool static_groups = false;
  double damp_percent = 0.01;
  double damp_increment = 0.01;
  int max_damp_retries = 10;
  int block_size = 128;
  std::string method = "gptq";
  std::string grid;
};

struct WireRequest {
  WireSettings settings;
  std::vector<WireTensor> tensors;  // W, then H (H absent: RTN without a Hessian)
};

struct WireReply {
  double loss = 0;
  double damp_used = 0;
  std::vector<WireTensor> tensors;
};

// grpc::StatusCode values, so callers need no gRPC header.
enum class CallCode : int {
  kOk = 0, kCancelled = 1, kUnknown = 2, kInvalidArgument = 3, kDeadlineExceeded = 4,
  kResourceExhausted = 8, kFailedPrecondition = 9, kInternal = 13, kUnavailable = 14,
  kUnauthenticated = 16,
};

struct CallStatus {
  int code = 0;  // a grpc::StatusCode
  std::string message;
  bool ok() const { return code == 0; }
  static CallStatus of(CallCode code, std::string message) { return {static_cast<int>(code), std::move(message)}; }
};

// "UNAVAILABLE", "INVALID_ARGUMENT", ... ("code 42" for others).
std::string code_name(int code);

struct ServerConfig {
  std::string listen;                 // "HOST:PORT"; port 0 picks a free one (see TransportServer::port)
  std::string token;                  // empty: no authentication (the CLI allows it on loopback only)
  std::string tls_cert_pem;           // both empty: plaintext
  std::string tls_key_pem;
  int64_t max_request_bytes = int64_t{4} << 30;  // a request's tensors, summed
};

// Answers one decoded, size-checked, authenticated request; never throws
// (an exception escaping it is answered INTERNAL).
using SolveHandler = std::function<CallStatus(const WireRequest&, WireReply&)>;
// Told about every call rejected before the handler ran (peer, status), for the log.
using RejectLogger = std::function<void(const std::string& peer, const CallStatus&)>;

class TransportServer {
 public:
  // Binds and starts serving; throws std::runtime_error when it cannot bind
  // or the TLS material is rejected.
  TransportServer(const ServerConfig& config, SolveHandler handler, RejectLogger on_reject);
  ~TransportServer();
  TransportServer(const TransportServer&) = delete;
  TransportServer& operator=(const TransportServer&) = delete;

  int port() const;
  // Calls still running when this is called are answered UNAVAILABLE as soon
  // as their handler returns (the client re-queues them); waits up to
  // `grace` for them, then cancels what is left.
  void shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));
  bool stopping() const;
  // Blocks until shutdown() (from another thread or a signal watcher).
  void wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ChannelConfig {
  std::string address;     // "HOST:PORT"
  std::string token;       // sent as "authorization: Bearer <token>" when not empty
  std::string tls_ca_pem;  // empty: plaintext
  std::string tls_server_name;  // overrides the name checked against the certificate (tests)
};

class TransportClient {
 public:
  explicit TransportClient(const ChannelConfig& config);
  ~TransportClient();
  TransportClient(const TransportClient&) = delete;
  TransportClient& operator=(const TransportClient&) = delete;

  CallStatus solve(const WireRequest& request, WireReply& reply, std::chrono::milliseconds deadline);
  // Sends `frames` as they are, as the serialized messages of a Solve call
  // (fuzzing and malformed-input tests), and returns only the status.
  CallStatus solve_frames(const std::vector<std::string>& frames, std::chrono::milliseconds deadline);
  const std::string& address() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The serialized frames of `request`, as solve() sends them.
std::vector<std::string> encode_frames(const WireRequest& request);

}  // namespace gptq::rpc
