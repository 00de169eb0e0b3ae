#include "gptq/backend/device.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "gptq/core/error.h"

namespace gptq::backend {
namespace {

bool all_digits(const std::string& text) {
  return !text.empty() && text.size() <= 4 && text.find_first_not_of("0123456789") == std::string::npos;
}

int parse_cuda_index(const std::string& spec) {
  if (spec == "cuda") return 0;
  const std::string digits = spec.substr(5);
  GPTQ_CHECK(all_digits(digits), "--device '", spec, "': expected cuda or cuda:N");
  return std::stoi(digits);
}

c10::Device cuda_device(const std::string& spec, int index) {
  GPTQ_CHECK_SUPPORTED(at::hasCUDA(), "--device ", spec,
                       ": CUDA is not available (no GPU, or libtorch built without CUDA)");
  GPTQ_CHECK_SUPPORTED(index < static_cast<int>(at::getNumGPUs()), "--device ", spec, ": only ",
                       at::getNumGPUs(), " CUDA device(s) present");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

// torchrun and other launchers give each process its GPU as LOCAL_RANK.
int local_rank_or_zero() {
  const char* value = std::getenv("LOCAL_RANK");
  if (value == nullptr || *value == '\0') return 0;
  GPTQ_CHECK(all_digits(value), "LOCAL_RANK='", value, "' is not a non-negative integer");
  return std::stoi(value);
}

}  // namespace

c10::Device resolve_device(const std::string& spec) {
  if (spec == "auto") {
    if (at::hasCUDA()) return cuda_device("auto (LOCAL_RANK)", local_rank_or_zero());
    if (at::hasMPS()) return c10::Device(c10::kMPS);
    return c10::Device(c10::kCPU);
  }
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "mps") {
    GPTQ_CHECK_SUPPORTED(at::hasMPS(), "--device mps: MPS is not available on this machine");
    return c10::Device(c10::kMPS);
  }
  if (spec.rfind("cuda", 0) == 0 && (spec.size() == 4 || spec[4] == ':')) {
    return cuda_device(spec, parse_cuda_index(spec));
  }
  throw InputError("--device '" + spec + "': expected auto, cpu, cuda, cuda:N or mps");
}

c10::ScalarType resolve_dtype(const std::string& spec, c10::ScalarType checkpoint_dtype,
                              const c10::Device& device) {
  if (spec == "fp32" || spec == "float32") return c10::kFloat;
  if (spec == "bf16" || spec == "bfloat16") return c10::kBFloat16;
  if (spec == "fp16" || spec == "float16") return c10::kHalf;
  GPTQ_CHECK(spec == "auto", "--dtype '", spec, "': expected auto, fp32, bf16 or fp16");
  if (checkpoint_dtype == c10::kHalf && device.is_cpu()) return c10::kFloat;
  return checkpoint_dtype;
}

ComputeContext resolve_compute(const std::string& device_spec, const std::string& dtype_spec,
                               c10::ScalarType checkpoint_dtype) {
  ComputeContext context;
  context.device = resolve_device(device_spec);
  context.dtype = resolve_dtype(dtype_spec, checkpoint_dtype, context.device);
  return context;
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
