#pragma once
// Locating ../shared/data for tests: tests that need it call
// GPTQ_REQUIRE_SHARED_DATA() and skip with a clear message when it is absent.
#include <gtest/gtest.h>

#include <filesystem>
#include <optional>

namespace gptq::testing {

// $GPTQ_SHARED_DIR/data (CTest sets it to <repo>/../shared), if it exists.
std::optional<std::filesystem::path> shared_data_dir();

// Path of the gptq-quant binary under test ($GPTQ_BINARY, set by CTest).
std::filesystem::path gptq_binary();

}  // namespace gptq::testing

#define GPTQ_REQUIRE_SHARED_DATA(var)                                                  \
  auto var##_opt = ::gptq::testing::shared_data_dir();                                 \
  if (!var##_opt) GTEST_SKIP() << "../shared/data not found (set GPTQ_SHARED_DIR)";    \
  const std::filesystem::path var = *var##_opt
