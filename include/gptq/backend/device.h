#pragma once
// Device selection behind one flag: --device auto|cpu|cuda[:N]|mps.
// auto picks CUDA (device 0), then MPS, then CPU. Asking for a device this
// build or machine lacks is an UnsupportedError naming it.
#include <c10/core/Device.h>

#include <string>

namespace gptq::backend {

c10::Device resolve_device(const std::string& spec);

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
