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

}  // namespace gptq::backend
