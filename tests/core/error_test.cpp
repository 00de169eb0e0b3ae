#include "gptq/core/error.h"

#include <gtest/gtest.h>

#include "gptq/core/progress.h"

namespace gptq {
namespace {

TEST(Error, CheckThrowsInputErrorWithExitCode2) {
  try {
    GPTQ_CHECK(1 + 1 == 3, "bits must be one of 2, 3, 4, 8, got ", 5);
    FAIL() << "GPTQ_CHECK did not throw";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "bits must be one of 2, 3, 4, 8, got 5");
    EXPECT_EQ(e.exit_code(), 2);
  }
}

TEST(Error, ContextIsPrependedAndKindKept) {
  try {
    try {
      throw NumericalError("cholesky failed");
    } catch (...) {
      rethrow_with_context("model.layers.3.mlp.down_proj");
    }
  } catch (const NumericalError& e) {
    EXPECT_STREQ(e.what(), "model.layers.3.mlp.down_proj: cholesky failed");
    EXPECT_EQ(e.exit_code(), 1);
    return;
  }
  FAIL() << "kind was lost";
}

TEST(Error, KindsCarryTheirExitCodeAndPrefix) {
  EXPECT_EQ(InputError("bad").describe(), "bad");
  EXPECT_EQ(UnsupportedError("arch").exit_code(), 2);
  EXPECT_EQ(NumericalError("nan").describe(), "numerical failure: nan");
  EXPECT_EQ(NumericalError("nan").exit_code(), 1);
  EXPECT_EQ(Error("disk full").describe(), "runtime failure: disk full");
  EXPECT_EQ(Error("disk full").exit_code(), 1);
  EXPECT_THROW(GPTQ_CHECK_NUMERIC(false, "x"), NumericalError);
}

TEST(Progress, HumanUnits) {
  EXPECT_EQ(human_bytes(512), "512 B");
  EXPECT_EQ(human_bytes(1536), "1.5 KiB");
  EXPECT_EQ(human_bytes(3.0 * (1ull << 30)), "3.0 GiB");
  EXPECT_EQ(human_seconds(3.44), "3.4s");
  EXPECT_EQ(human_seconds(125), "2m05s");
}

}  // namespace
}  // namespace gptq
