#pragma once
// Activations that live in a file instead of RAM (--offload-activations).
//
// file_backed_empty() returns an uninitialised CPU tensor whose storage is a
// shared mapping of an unlinked file in `dir`, with its blocks reserved up
// front (posix_fallocate): a full disk is an Error naming the directory when
// the tensor is made, never a SIGBUS when a page is first written. The kernel
// writes its dirty pages back and drops them under memory pressure, so
// tensors of hidden size for all calibration windows need not fit in RAM;
// the block streams through them chunk by chunk as before. The numbers are
// the same as in RAM (same kernels, same order), so the output is
// byte-identical either way. The file disappears with the tensor's storage.
#include <ATen/core/Tensor.h>

#include <filesystem>

namespace gptq::model {

at::Tensor file_backed_empty(const std::filesystem::path& dir, at::IntArrayRef sizes, c10::ScalarType dtype);

// Writes the dirty pages of every live activation file to disk and drops
// its pages from this process. Called after each chunk of an offloaded
// pass: a memory cgroup (v1) cannot reclaim dirty shared pages fast enough
// by itself and OOM-kills instead, while clean ones it drops freely.
void write_back_activation_files();

}  // namespace gptq::model
