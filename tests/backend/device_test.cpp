#include "gptq/backend/device.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <cstdlib>

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

TEST(Device, DtypeRule) {
  const c10::Device cpu(c10::kCPU);
  EXPECT_EQ(resolve_dtype("auto", c10::kBFloat16, cpu), c10::kBFloat16);
  EXPECT_EQ(resolve_dtype("auto", c10::kHalf, cpu), c10::kFloat);  // CPU fp16 computes in fp32
  EXPECT_EQ(resolve_dtype("auto", c10::kHalf, c10::Device(c10::kCUDA, 0)), c10::kHalf);
  EXPECT_EQ(resolve_dtype("bf16", c10::kFloat, cpu), c10::kBFloat16);
  EXPECT_EQ(resolve_dtype("float16", c10::kFloat, cpu), c10::kHalf);
  EXPECT_THROW(resolve_dtype("int8", c10::kFloat, cpu), InputError);
  const ComputeContext context = resolve_compute("cpu", "auto", c10::kHalf);
  EXPECT_TRUE(context.device.is_cpu());
  EXPECT_EQ(context.dtype, c10::kFloat);
}

TEST(Device, AutoHonoursLocalRankOnlyWithCuda) {
  ::setenv("LOCAL_RANK", "not-a-rank", 1);
  if (at::hasCUDA()) {
    EXPECT_THROW(resolve_device("auto"), InputError);
    ::setenv("LOCAL_RANK", "0", 1);
    EXPECT_EQ(resolve_device("auto"), c10::Device(c10::kCUDA, 0));
    ::setenv("LOCAL_RANK", "4096", 1);
    EXPECT_THROW(resolve_device("auto"), UnsupportedError);
  } else if (!at::hasMPS()) {
    EXPECT_TRUE(resolve_device("auto").is_cpu());  // no GPU: the rank does not matter
  }
  ::unsetenv("LOCAL_RANK");
}

TEST(Device, CudaIndexIsChecked) {
  EXPECT_THROW(resolve_device("cuda:99999"), InputError);  // more digits than any index
  if (at::hasCUDA()) EXPECT_THROW(resolve_device("cuda:4096"), UnsupportedError);
}

// A build that compiles our sources without libtorch's OpenMP still runs, but
// every parallel loop of ours (the GPTQ block kernel among them) on one thread.
TEST(Device, OwnParallelLoopsReachEveryThread) {
  EXPECT_EQ(parallel_for_threads(), cpu_threads());
}

}  // namespace
}  // namespace gptq::backend
