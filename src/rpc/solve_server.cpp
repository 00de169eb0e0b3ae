#include "gptq/rpc/solve_server.h"

#include <chrono>

#include "gptq/core/error.h"
#include "gptq/core/fault_point.h"
#include "gptq/core/log.h"
#include "gptq/rpc/solve_codec.h"

namespace gptq::rpc {

SolveServer::SolveServer(SolveServerOptions options) : options_(std::move(options)) {
  ServerConfig config;
  config.listen = options_.listen;
  config.token = options_.token;
  config.tls_cert_pem = options_.tls_cert_pem;
  config.tls_key_pem = options_.tls_key_pem;
  config.max_request_bytes = options_.max_request_bytes;
  auto on_reject = [this](const std::string& peer, const CallStatus& status) {
    ++rejected_;
    spdlog::warn("rejected a call from {}: {}: {}", peer, code_name(status.code), status.message);
  };
  try {
    transport_ = std::make_unique<TransportServer>(
        config, [this](const WireRequest& request, WireReply& reply) { return handle(request, reply); }, on_reject);
  } catch (const std::runtime_error& e) {
    throw InputError(std::string("--listen: ") + e.what());
  }
}

SolveServer::~SolveServer() = default;

CallStatus SolveServer::handle(const WireRequest& request, WireReply& reply) {
  if (options_.on_job_received) options_.on_job_received();
  fault_point("worker-job");  // the SIGKILL-mid-job test (core/fault_point.h)
  const auto start = std::chrono::steady_clock::now();
  std::string shape = "?";
  if (!request.tensors.empty() && request.tensors.front().shape.size() == 2) {
    shape = std::to_string(request.tensors.front().shape[0]) + "x" + std::to_string(request.tensors.front().shape[1]);
  }
  auto failed = [&](CallCode code, const std::string& message) {
    ++failed_;
    spdlog::warn("job [{}] {}: {}: {}", shape, request.settings.method, code_name(static_cast<int>(code)), message);
    return CallStatus::of(code, message);
  };
  try {
    std::lock_guard<std::mutex> lock(device_mutex_);
    reply = encode_reply(solve_request(request, options_.device));
  } catch (const InputError& e) {
    return failed(CallCode::kInvalidArgument, e.what());
  } catch (const UnsupportedError& e) {
    return failed(CallCode::kInvalidArgument, e.what());
  } catch (const NumericalError& e) {
    return failed(CallCode::kFailedPrecondition, e.describe());
  } catch (const std::exception& e) {
    std::string message = e.what();
    if (auto eol = message.find('\n'); eol != std::string::npos) message.resize(eol);
    return failed(CallCode::kInternal, message);
  }
  ++solved_;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("solved [{}] {} bits={} g={} err={:.3e} {:.2f}s", shape, request.settings.method,
               request.settings.bits, request.settings.group_size, reply.loss, seconds);
  return {};
}

bool is_loopback(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  const std::string host = listen.substr(0, colon);
  if (host == "localhost" || host == "[::1]") return true;
  // 127.0.0.0/8 as a dotted quad, not a host name that merely starts with "127."
  return host.rfind("127.", 0) == 0 && host.find_first_not_of("0123456789.") == std::string::npos;
}

}  // namespace gptq::rpc
