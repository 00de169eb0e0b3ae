#pragma once
// SolveServer: the layer-solve worker behind `gptq-quant server`.
//
// It answers Solve calls (transport.h) with solve_request (solve_codec.h):
// the same solver calls a local run makes, one job at a time on its device
// (jobs arriving together queue for it). It never touches the file system
// for a client. Rejections, each logged with the peer:
//   UNAUTHENTICATED     missing or wrong bearer token
//   RESOURCE_EXHAUSTED  the request's tensors exceed max_request_bytes
//   INVALID_ARGUMENT    malformed frames, wrong dtype/shape, NaN/Inf, bad settings
//   FAILED_PRECONDITION the solver's NumericalError (message "numerical failure: ...")
//   INTERNAL            anything else the solve threw (out of memory, a bug)
//   UNAVAILABLE         a job that finished after shutdown() began
#include <c10/core/Device.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "gptq/rpc/transport.h"

namespace gptq::rpc {

struct SolveServerOptions {
  std::string listen = "127.0.0.1:0";
  std::string token;  // empty: no authentication (the CLI allows that on loopback only)
  std::string tls_cert_pem;
  std::string tls_key_pem;
  int64_t max_request_bytes = int64_t{4} << 30;
  c10::Device device = c10::Device(c10::kCPU);
  // Called with each decoded job before it is solved (tests stop a worker
  // mid-job through it); may be empty.
  std::function<void()> on_job_received;
};

class SolveServer {
 public:
  // Throws InputError when it cannot listen (names the address).
  explicit SolveServer(SolveServerOptions options);
  ~SolveServer();

  int port() const { return transport_->port(); }
  void shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(2000)) { transport_->shutdown(grace); }
  bool stopping() const { return transport_->stopping(); }
  void wait() { transport_->wait(); }
  int64_t jobs_solved() const { return solved_.load(); }
  int64_t jobs_failed() const { return failed_.load(); }
  int64_t calls_rejected() const { return rejected_.load(); }

 private:
  CallStatus handle(const WireRequest& request, WireReply& reply);

  SolveServerOptions options_;
  std::mutex device_mutex_;
  std::atomic<int64_t> solved_{0};
  std::atomic<int64_t> failed_{0};
  std::atomic<int64_t> rejected_{0};
  std::unique_ptr<TransportServer> transport_;
};

// True when `listen` ("HOST:PORT") binds loopback only: 127.0.0.0/8,
// localhost or [::1].
bool is_loopback(const std::string& listen);

}  // namespace gptq::rpc
