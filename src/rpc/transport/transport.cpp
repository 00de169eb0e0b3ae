// The gRPC side of the layer-solve worker (transport.h). No libtorch here:
// see the header for why.
#include "gptq/rpc/transport.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>

#include "solve.grpc.pb.h"

namespace gptq::rpc {
namespace {

constexpr int kMaxTensors = 16;
constexpr int kMaxDims = 8;
// One Chunk frame plus room for its framing; a bigger single message is
// refused by gRPC itself (RESOURCE_EXHAUSTED).
constexpr int kMaxFrameBytes = static_cast<int>(kChunkBytes + (size_t{1} << 16));

// A client-supplied string as it may appear in messages and logs: at most
// 64 bytes, anything but printable ASCII as '?'.
std::string printable(const std::string& text) {
  std::string out = text.substr(0, 64);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Runs over the longer string whatever the contents, so the time says
  // nothing about how much of a guessed token was right.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// Fills the tensors a header announces from the chunks that follow it,
// checking sizes on the way so a lying header can never make us buffer more
// than it declared, nor more than the limit.
class PayloadAssembler {
 public:
  // Empty string on success, else why the header is refused; `too_big` tells
  // RESOURCE_EXHAUSTED from INVALID_ARGUMENT.
  std::string init(const wire::Header& header, int64_t limit_bytes, bool& too_big, std::vector<WireTensor>& out) {
    too_big = false;
    if (header.tensors_size() > kMaxTensors) return "more than 16 tensors";
    uint64_t total = 0;
    out.clear();
    for (const auto& meta : header.tensors()) {
      WireTensor tensor;
      tensor.name = printable(meta.name());
      tensor.dtype = static_cast<WireDType>(meta.dtype());
      const size_t item = element_size(tensor.dtype);
      if (item == 0) return "tensor '" + tensor.name + "' has an unknown dtype " + std::to_string(meta.dtype());
      if (meta.shape_size() > kMaxDims) return "tensor '" + tensor.name + "' has more than 8 dimensions";
      uint64_t n_bytes = item;
      for (int64_t dim : meta.shape()) {
        if (dim < 0) return "tensor '" + tensor.name + "' has a negative dimension";
        if (__builtin_mul_overflow(n_bytes, static_cast<uint64_t>(dim), &n_bytes) ||
            n_bytes > static_cast<uint64_t>(limit_bytes)) {
          too_big = true;
          return "tensor '" + tensor.name + "' is larger than the worker's message limit of " +
                 std::to_string(limit_bytes >> 20) + " MiB";
        }
        tensor.shape.push_back(dim);
      }
      total += n_bytes;
      if (total > static_cast<uint64_t>(limit_bytes)) {
        too_big = true;
        return "the request is larger than the worker's message limit of " + std::to_string(limit_bytes >> 20) + " MiB";
      }
      sizes_.push_back(n_bytes);
      out.push_back(std::move(tensor));
    }
    for (size_t i = 0; i < out.size(); ++i) out[i].bytes.reserve(sizes_[i]);
    return "";
  }

  // False when the chunk runs past the declared bytes.
  bool add(const std::string& chunk, std::vector<WireTensor>& tensors) {
    size_t offset = 0;
    while (offset < chunk.size()) {
      while (current_ < tensors.size() && tensors[current_].bytes.size() == sizes_[current_]) ++current_;
      if (current_ == tensors.size()) return false;
      auto& bytes = tensors[current_].bytes;
      const size_t take = std::min(chunk.size() - offset, static_cast<size_t>(sizes_[current_] - bytes.size()));
      bytes.append(chunk, offset, take);
      offset += take;
    }
    return true;
  }

  bool complete(const std::vector<WireTensor>& tensors) const {
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].bytes.size() != sizes_[i]) return false;
    }
    return true;
  }

 private:
  std::vector<uint64_t> sizes_;
  size_t current_ = 0;
};

void fill_meta(const WireTensor& tensor, wire::TensorMeta& meta) {
  meta.set_name(tensor.name);
  meta.set_dtype(static_cast<wire::DType>(tensor.dtype));
  for (int64_t dim : tensor.shape) meta.add_shape(dim);
}

// Writes the header then every tensor's bytes in chunks; false when the peer went away.
template <typename Stream>
bool write_frames(Stream& stream, wire::Frame& header_frame, const std::vector<WireTensor>& tensors) {
  if (!stream.Write(header_frame)) return false;
  wire::Frame frame;
  for (const auto& tensor : tensors) {
    for (size_t offset = 0; offset < tensor.bytes.size(); offset += kChunkBytes) {
      frame.set_chunk(tensor.bytes.substr(offset, kChunkBytes));
      if (!stream.Write(frame)) return false;
    }
  }
  return true;
}

void to_wire(const WireSettings& settings, wire::Settings& out) {
  out.set_bits(settings.bits);
  out.set_group_size(settings.group_size);
  out.set_sym(settings.sym);
  out.set_mse(settings.mse);
  out.set_min_zero(settings.min_zero);
  out.set_desc_act(settings.desc_act);
  out.set_static_groups(settings.static_groups);
  out.set_damp_percent(settings.damp_percent);
  out.set_damp_increment(settings.damp_increment);
  out.set_max_damp_retries(settings.max_damp_retries);
  out.set_block_size(settings.block_size);
  out.set_method(settings.method);
  out.set_grid(settings.grid);
}

WireSettings from_wire(const wire::Settings& in) {
  WireSettings settings;
  settings.bits = in.bits();
  settings.group_size = in.group_size();
  settings.sym = in.sym();
  settings.mse = in.mse();
  settings.min_zero = in.min_zero();
  settings.desc_act = in.desc_act();
  settings.static_groups = in.static_groups();
  settings.damp_percent = in.damp_percent();
  settings.damp_increment = in.damp_increment();
  settings.max_damp_retries = in.max_damp_retries();
  settings.block_size = in.block_size();
  settings.method = printable(in.method());
  settings.grid = printable(in.grid());
  return settings;
}

wire::Frame request_header(const WireRequest& request) {
  wire::Frame frame;
  auto* header = frame.mutable_header();
  to_wire(request.settings, *header->mutable_settings());
  for (const auto& tensor : request.tensors) fill_meta(tensor, *header->add_tensors());
  return frame;
}

class SolveService final : public wire::LayerSolver::Service {
 public:
  SolveService(const ServerConfig& config, SolveHandler handler, RejectLogger on_reject)
      : token_(config.token), limit_(config.max_request_bytes), handler_(std::move(handler)),
        on_reject_(std::move(on_reject)) {}

  std::atomic<bool> stopping{false};

  grpc::Status Solve(grpc::ServerContext* context, grpc::ServerReaderWriter<wire::Frame, wire::Frame>* stream) override {
    auto reject = [&](CallCode code, std::string message) {
      CallStatus status = CallStatus::of(code, std::move(message));
      if (on_reject_) on_reject_(context->peer(), status);
      return grpc::Status(static_cast<grpc::StatusCode>(status.code), status.message);
    };
    if (!token_.empty() && !authorized(*context)) {
      return reject(CallCode::kUnauthenticated, "missing or wrong bearer token");
    }
    wire::Frame frame;
    if (!stream->Read(&frame)) return reject(CallCode::kInvalidArgument, "the request has no frames");
    if (!frame.has_header()) return reject(CallCode::kInvalidArgument, "the first frame is not a header");
    WireRequest request;
    request.settings = from_wire(frame.header().settings());
    PayloadAssembler assembler;
    bool too_big = false;
    if (auto why = assembler.init(frame.header(), limit_, too_big, request.tensors); !why.empty()) {
      return reject(too_big ? CallCode::kResourceExhausted : CallCode::kInvalidArgument, why);
    }
    while (stream->Read(&frame)) {
      if (!frame.has_chunk()) return reject(CallCode::kInvalidArgument, "a frame after the header is not a chunk");
      if (!assembler.add(frame.chunk(), request.tensors)) {
        return reject(CallCode::kInvalidArgument, "more bytes than the header declares");
      }
    }
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled");
    if (!assembler.complete(request.tensors)) {
      return reject(CallCode::kInvalidArgument, "fewer bytes than the header declares");
    }
    WireReply reply;
    CallStatus status;
    try {
      status = handler_(request, reply);
    } catch (const std::exception& e) {
      status = CallStatus::of(CallCode::kInternal, e.what());
    }
    if (stopping.load()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is shutting down");
    if (!status.ok()) return grpc::Status(static_cast<grpc::StatusCode>(status.code), status.message);
    wire::Frame header_frame;
    auto* header = header_frame.mutable_header();
    header->set_loss(reply.loss);
    header->set_damp_used(reply.damp_used);
    for (const auto& tensor : reply.tensors) fill_meta(tensor, *header->add_tensors());
    if (!write_frames(*stream, header_frame, reply.tensors)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away during the reply");
    }
    return grpc::Status::OK;
  }

 private:
  bool authorized(const grpc::ServerContext& context) const {
    const auto& metadata = context.client_metadata();
    auto found = metadata.find("authorization");
    if (found == metadata.end()) return false;
    const std::string_view given(found->second.data(), found->second.size());
    return constant_time_equal(given, "Bearer " + token_);
  }

  std::string token_;
  int64_t limit_;
  SolveHandler handler_;
  RejectLogger on_reject_;
};

}  // namespace

size_t element_size(WireDType dtype) {
  switch (dtype) {
    case WireDType::kFloat32: return 4;
    case WireDType::kFloat16: return 2;
    case WireDType::kBFloat16: return 2;
    case WireDType::kUInt8: return 1;
    case WireDType::kInt32: return 4;
    case WireDType::kInt64: return 8;
    default: return 0;
  }
}

std::string code_name(int code) {
  switch (static_cast<CallCode>(code)) {
    case CallCode::kOk: return "OK";
    case CallCode::kCancelled: return "CANCELLED";
    case CallCode::kUnknown: return "UNKNOWN";
    case CallCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case CallCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case CallCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case CallCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case CallCode::kInternal: return "INTERNAL";
    case CallCode::kUnavailable: return "UNAVAILABLE";
    case CallCode::kUnauthenticated: return "UNAUTHENTICATED";
  }
  return "code " + std::to_string(code);
}

std::vector<std::string> encode_frames(const WireRequest& request) {
  std::vector<std::string> frames{request_header(request).SerializeAsString()};
  wire::Frame frame;
  for (const auto& tensor : request.tensors) {
    for (size_t offset = 0; offset < tensor.bytes.size(); offset += kChunkBytes) {
      frame.set_chunk(tensor.bytes.substr(offset, kChunkBytes));
      frames.push_back(frame.SerializeAsString());
    }
  }
  return frames;
}

// ---- server ----

struct TransportServer::Impl {
  std::unique_ptr<SolveService> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::atomic<bool> shut{false};
};

TransportServer::TransportServer(const ServerConfig& config, SolveHandler handler, RejectLogger on_reject)
    : impl_(std::make_unique<Impl>()) {
  impl_->service = std::make_unique<SolveService>(config, std::move(handler), std::move(on_reject));
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (!config.tls_cert_pem.empty() || !config.tls_key_pem.empty()) {
    grpc::SslServerCredentialsOptions options;
    options.pem_key_cert_pairs.push_back({config.tls_key_pem, config.tls_cert_pem});
    credentials = grpc::SslServerCredentials(options);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen, credentials, &impl_->port);
  builder.RegisterService(impl_->service.get());
  builder.SetMaxReceiveMessageSize(kMaxFrameBytes);
  builder.SetMaxSendMessageSize(kMaxFrameBytes);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || impl_->port == 0) {
    throw std::runtime_error("cannot listen on '" + config.listen +
                             "' (address in use, not local, or the TLS certificate/key rejected)");
  }
}

TransportServer::~TransportServer() {
  shutdown(std::chrono::milliseconds(0));
  impl_->server->Wait();
}

int TransportServer::port() const { return impl_->port; }

void TransportServer::shutdown(std::chrono::milliseconds grace) {
  if (impl_->shut.exchange(true)) return;
  impl_->service->stopping = true;
  impl_->server->Shutdown(std::chrono::system_clock::now() + grace);
}

bool TransportServer::stopping() const { return impl_->service->stopping.load(); }

void TransportServer::wait() { impl_->server->Wait(); }

// ---- client ----

struct TransportClient::Impl {
  ChannelConfig config;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<wire::LayerSolver::Stub> stub;

  CallStatus call(const std::function<bool(grpc::ClientReaderWriter<wire::Frame, wire::Frame>&)>& send,
                  WireReply& reply, std::chrono::milliseconds deadline) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    if (!config.token.empty()) context.AddMetadata("authorization", "Bearer " + config.token);
    auto stream = stub->Solve(&context);
    // A failed write means the server already answered (a rejection): stop
    // sending and read its status.
    if (send(*stream)) stream->WritesDone();
    std::string malformed;
    wire::Frame frame;
    PayloadAssembler assembler;
    bool have_header = false;
    while (stream->Read(&frame)) {
      if (!malformed.empty()) continue;
      if (!have_header) {
        if (!frame.has_header()) {
          malformed = "the first reply frame is not a header";
          continue;
        }
        have_header = true;
        reply.loss = frame.header().loss();
        reply.damp_used = frame.header().damp_used();
        bool too_big = false;
        malformed = assembler.init(frame.header(), int64_t{1} << 40, too_big, reply.tensors);
      } else if (!frame.has_chunk() || !assembler.add(frame.chunk(), reply.tensors)) {
        malformed = "the reply frames do not match its header";
      }
    }
    const grpc::Status status = stream->Finish();
    if (!status.ok()) return {static_cast<int>(status.error_code()), status.error_message()};
    if (malformed.empty() && !have_header) malformed = "the reply has no header";
    if (malformed.empty() && !assembler.complete(reply.tensors)) malformed = "the reply is cut short";
    if (!malformed.empty()) return CallStatus::of(CallCode::kInternal, "malformed reply: " + malformed);
    return {};
  }
};

TransportClient::TransportClient(const ChannelConfig& config) : impl_(std::make_unique<Impl>()) {
  impl_->config = config;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxFrameBytes);
  // The worker enforces its own limit (solve_frames may send anything).
  args.SetMaxSendMessageSize(-1);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!config.tls_ca_pem.empty()) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = config.tls_ca_pem;
    credentials = grpc::SslCredentials(options);
    if (!config.tls_server_name.empty()) args.SetSslTargetNameOverride(config.tls_server_name);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  impl_->channel = grpc::CreateCustomChannel(config.address, credentials, args);
  impl_->stub = wire::LayerSolver::NewStub(impl_->channel);
}

TransportClient::~TransportClient() = default;

const std::string& TransportClient::address() const { return impl_->config.address; }

CallStatus TransportClient::solve(const WireRequest& request, WireReply& reply, std::chrono::milliseconds deadline) {
  return impl_->call(
      [&](auto& stream) {
        wire::Frame header = request_header(request);
        return write_frames(stream, header, request.tensors);
      },
      reply, deadline);
}

CallStatus TransportClient::solve_frames(const std::vector<std::string>& frames, std::chrono::milliseconds deadline) {
  // Raw bytes through the generic (untyped) stub, so the worker's own
  // parsing is what gets exercised.
  grpc::GenericStub stub(impl_->channel);
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  if (!impl_->config.token.empty()) context.AddMetadata("authorization", "Bearer " + impl_->config.token);
  auto call = stub.PrepareCall(&context, "/gptq.rpc.wire.LayerSolver/Solve", &queue);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&] { return queue.Next(&tag, &ok) && ok; };
  call->StartCall(nullptr);
  if (step()) {
    bool sending = true;
    for (const auto& bytes : frames) {
      grpc::Slice slice(bytes);
      grpc::ByteBuffer buffer(&slice, 1);
      call->Write(buffer, nullptr);
      if (!step()) {
        sending = false;
        break;
      }
    }
    if (sending) {
      call->WritesDone(nullptr);
      step();
    }
    for (grpc::ByteBuffer reply;;) {
      call->Read(&reply, nullptr);
      if (!step()) break;
    }
  }
  grpc::Status status;
  call->Finish(&status, nullptr);
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return {static_cast<int>(status.error_code()), status.error_message()};
}

}  // namespace gptq::rpc
