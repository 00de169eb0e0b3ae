#include "gptq/backend/device.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gptq/core/error.h"

namespace gptq::backend {
namespace {

int parse_cuda_index(const std::string& spec) {
  if (spec == "cuda") return 0;
  const std::string digits = spec.substr(5);
  GPTQ_CHECK(!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos,
             "--device '", spec, "': expected cuda or cuda:N");
  return std::stoi(digits);
}

}  // namespace

c10::Device resolve_device(const std::string& spec) {
  if (spec == "auto") {
    if (at::hasCUDA()) return c10::Device(c10::kCUDA, 0);
    if (at::hasMPS()) return c10::Device(c10::kMPS);
    return c10::Device(c10::kCPU);
  }
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "mps") {
    GPTQ_CHECK_SUPPORTED(at::hasMPS(), "--device mps: MPS is not available on this machine");
    return c10::Device(c10::kMPS);
  }
  if (spec.rfind("cuda", 0) == 0 && (spec.size() == 4 || spec[4] == ':')) {
    const int index = parse_cuda_index(spec);
    GPTQ_CHECK_SUPPORTED(at::hasCUDA(), "--device ", spec,
                         ": CUDA is not available (no GPU, or libtorch built without CUDA)");
    GPTQ_CHECK_SUPPORTED(index < static_cast<int>(at::getNumGPUs()), "--device ", spec,
                         ": only ", at::getNumGPUs(), " CUDA device(s) present");
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw InputError("--device '" + spec + "': expected auto, cpu, cuda, cuda:N or mps");
}

std::string device_name(const c10::Device& device) { return device.str(); }

int cpu_threads() { return at::get_num_threads(); }

int parallel_for_threads() {
  const int threads = at::get_num_threads();
  std::vector<std::atomic<bool>> reached(threads);
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    const int thread = at::get_thread_num();
    if (thread >= 0 && thread < threads) reached[thread] = true;
    // Hold the chunk briefly so one fast thread cannot take every chunk.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  return static_cast<int>(std::count(reached.begin(), reached.end(), true));
}

}  // namespace gptq::backend
