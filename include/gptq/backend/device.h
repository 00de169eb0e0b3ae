#pragma once
// The one place a run's device and compute dtype are decided; every command
// resolves a ComputeContext once and hands it down.
//
// --device auto|cpu|cuda[:N]|mps. auto picks CUDA, then MPS, then CPU; on
// CUDA it takes device $LOCAL_RANK when that is set (one process per GPU
// under torchrun), else device 0. Asking for a device this build or machine
// lacks, or a CUDA index past the devices present, is an UnsupportedError
// naming it; a malformed spec (or LOCAL_RANK) an InputError.
//
// --dtype auto|fp32|bf16|fp16 (also float32, bfloat16, float16). auto is the
// checkpoint's dtype, except float16 on the CPU, which computes in float32
// (CPU fp16 matmuls are slow and accumulate in half precision).
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace gptq::backend {

struct ComputeContext {
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;
};

c10::Device resolve_device(const std::string& spec);
c10::ScalarType resolve_dtype(const std::string& spec, c10::ScalarType checkpoint_dtype,
                              const c10::Device& device);
// Both of the above, device first (the dtype rule depends on it).
ComputeContext resolve_compute(const std::string& device_spec, const std::string& dtype_spec,
                               c10::ScalarType checkpoint_dtype);

// "cpu", "cuda:0", "mps".
std::string device_name(const c10::Device& device);

// Threads libtorch uses for CPU work (at::get_num_threads()).
int cpu_threads();

// Threads that an at::parallel_for compiled into this project reaches. Below
// cpu_threads() when the project was built without the OpenMP libtorch
// parallelises with: ATen's parallel_for is a header template, so each of our
// own parallel loops would silently run on one thread.
int parallel_for_threads();

}  // namespace gptq::backend
