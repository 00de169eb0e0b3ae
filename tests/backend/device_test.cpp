#include "gptq/backend/device.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>

#include "gptq/core/error.h"

namespace gptq::backend {
namespace {

TEST(Device, CpuAndAuto) {
  EXPECT_EQ(resolve_device("cpu"), c10::Device(c10::kCPU));
  const c10::Device picked = resolve_device("auto");
  if (at::hasCUDA()) {
    EXPECT_TRUE(picked.is_cuda());
  } else if (!at::hasMPS()) {
    EXPECT_TRUE(picked.is_cpu());
  }
}

TEST(Device, MalformedSpecIsInputError) {
  EXPECT_THROW(resolve_device("gpu"), InputError);
  EXPECT_THROW(resolve_device("cuda:x"), InputError);
  EXPECT_THROW(resolve_device("cudax"), InputError);
}

TEST(Device, MissingAcceleratorIsUnsupported) {
  if (!at::hasCUDA()) EXPECT_THROW(resolve_device("cuda:0"), UnsupportedError);
  if (!at::hasMPS()) EXPECT_THROW(resolve_device("mps"), UnsupportedError);
}

// A build that compiles our sources without libtorch's OpenMP still runs, but
// every parallel loop of ours (the GPTQ block kernel among them) on one thread.
TEST(Device, OwnParallelLoopsReachEveryThread) {
  EXPECT_EQ(parallel_for_threads(), cpu_threads());
}

}  // namespace
}  // namespace gptq::backend
