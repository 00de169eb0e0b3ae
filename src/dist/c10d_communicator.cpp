// The only translation unit that sees c10d (and, through ProcessGroupGloo.hpp,
// the gloo headers Debian's libgloo-dev supplies: the wheel ships gloo's code
// inside libtorch_cpu but not its headers). No gloo type is touched beyond
// the opaque transport device the factory returns.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/dist/communicator.h"

namespace gptq::dist {
namespace {

using Clock = std::chrono::steady_clock;

// c10d's messages carry a C++ backtrace after the first line, gloo's a
// "[.../pair.cc:545] " source location before it and advice after the first
// sentence; the cause ("Read error [127.0.0.1]:15555: Connection reset by
// peer") is what our one line keeps.
std::string first_line(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10_error != nullptr ? c10_error->what_without_backtrace() : e.what();
  const size_t newline = text.find('\n');
  if (newline != std::string::npos) text.resize(newline);
  if (text.starts_with("[") && text.find("] ") != std::string::npos) text.erase(0, text.find("] ") + 2);
  const size_t advice = text.find(". This is typically");
  if (advice != std::string::npos) text.resize(advice);
  return text;
}

class C10dCommunicator final : public Communicator {
 public:
  C10dCommunicator(const LaunchInfo& launch, c10::intrusive_ptr<c10d::Store> store,
                   c10::intrusive_ptr<c10d::Backend> backend, c10::Device device, std::chrono::milliseconds timeout)
      : launch_(launch), store_(std::move(store)), backend_(std::move(backend)), device_(device), timeout_(timeout) {}

  ~C10dCommunicator() override {
    try {
      backend_->shutdown();
    } catch (...) {
      // A peer already gone: nothing left to tell it.
    }
  }

  int rank() const override { return launch_.rank; }
  int world_size() const override { return launch_.world_size; }
  std::string backend_name() const override { return backend_->getBackendName(); }

  void all_reduce_sum(at::Tensor& tensor, const std::string& what) override {
    at::Tensor local = on_device(tensor);
    std::vector<at::Tensor> tensors{local};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    options.timeout = timeout_;
    run("all-reduce", what, local.nbytes(), [&] { return backend_->allreduce(tensors, options); });
    if (!local.is_same(tensor)) tensor.copy_(local);
  }

  at::Tensor all_gather_rows(const at::Tensor& part, const std::vector<int64_t>& sizes,
                             const std::string& what) override {
    GPTQ_ASSERT(static_cast<int>(sizes.size()) == world_size() && part.dim() >= 1 &&
                    part.size(0) == sizes[static_cast<size_t>(rank())],
                "all_gather_rows of ", what, ": this rank's part has ", part.dim() ? part.size(0) : -1, " rows");
    // Gloo and NCCL gather equal shapes: pad every part to the largest.
    const int64_t widest = *std::max_element(sizes.begin(), sizes.end());
    std::vector<int64_t> shape = part.sizes().vec();
    shape[0] = widest;
    at::Tensor padded = at::zeros(shape, part.options().device(device_));
    if (part.size(0) > 0) padded.narrow(0, 0, part.size(0)).copy_(part);
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < world_size(); ++r) outputs[0].push_back(at::empty_like(padded));
    std::vector<at::Tensor> inputs{padded};
    c10d::AllgatherOptions options;
    options.timeout = timeout_;
    run("all-gather", what, padded.nbytes(), [&] { return backend_->allgather(outputs, inputs, options); });
    std::vector<at::Tensor> pieces;
    for (int r = 0; r < world_size(); ++r) pieces.push_back(outputs[0][static_cast<size_t>(r)].narrow(0, 0, sizes[r]));
    return at::cat(pieces, 0).to(part.device());
  }

  void barrier(const std::string& what) override {
    c10d::BarrierOptions options;
    options.timeout = timeout_;
    if (device_.is_cuda()) options.device_ids = {device_.index()};
    run("barrier", what, 0, [&] { return backend_->barrier(options); });
  }

 private:
  at::Tensor on_device(const at::Tensor& tensor) const {
    return tensor.device() == device_ && tensor.is_contiguous() ? tensor : tensor.to(device_).contiguous();
  }

  template <typename Start>
  void run(const char* kind, const std::string& what, int64_t bytes, Start&& start) {
    const auto begin = Clock::now();
    try {
      c10::intrusive_ptr<c10d::Work> work = start();
      work->wait(timeout_);
    } catch (const std::exception& e) {
      throw Error("rank " + std::to_string(rank()) + " of " + std::to_string(world_size()) + ": " + kind + " of " +
                  what + " failed (" + first_line(e) + "); a peer rank has died or stopped answering, so this "
                  "rank stops too");
    }
    stats_.calls += 1;
    stats_.bytes += bytes;
    stats_.seconds += std::chrono::duration<double>(Clock::now() - begin).count();
  }

  LaunchInfo launch_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  c10::Device device_;
  std::chrono::milliseconds timeout_;
};

c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, const LaunchInfo& launch,
                                           std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // GLOO_SOCKET_IFNAME picks the interface as torch.distributed does; else
  // the address this host's name resolves to (loopback when it resolves to none).
  const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
  options->devices.push_back(interface != nullptr && *interface != '\0'
                                 ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
                                 : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, launch.rank, launch.world_size, options);
}

}  // namespace

std::unique_ptr<Communicator> connect(const LaunchInfo& launch, c10::Device device, std::chrono::milliseconds timeout) {
  const std::string where = launch.master_addr + ":" + std::to_string(launch.master_port);
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(launch.master_port);
    store_options.isServer = launch.rank == 0;
    store_options.numWorkers = static_cast<size_t>(launch.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    auto tcp_store = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, store_options);
    // Our own key space, so a store shared with other programs cannot collide.
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>("gptq-quant", tcp_store);
    c10::intrusive_ptr<c10d::Backend> backend;
    if (device.is_cuda()) {
#ifdef USE_C10D_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, launch.rank, launch.world_size, options);
#else
      throw UnsupportedError("this build has no NCCL backend for CUDA tensors");
#endif
    } else {
      GPTQ_CHECK_SUPPORTED(device.is_cpu(), "data-parallel runs need CPU (Gloo) or CUDA (NCCL) tensors, not ",
                           device.str());
      backend = make_gloo(store, launch, timeout);
    }
    spdlog::info("rank {} of {} joined through {} ({} launch, {} backend)", launch.rank, launch.world_size, where,
                 launch.launcher, backend->getBackendName());
    return std::make_unique<C10dCommunicator>(launch, std::move(store), std::move(backend), device, timeout);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world_size) +
                ": cannot join the job through " + where + " (" + first_line(e) + ")");
  }
}

}  // namespace gptq::dist
