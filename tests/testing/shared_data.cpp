#include "testing/shared_data.h"

#include <cstdlib>

namespace gptq::testing {

std::optional<std::filesystem::path> shared_data_dir() {
  const char* env = std::getenv("GPTQ_SHARED_DIR");
  std::filesystem::path dir = env ? std::filesystem::path(env) : std::filesystem::path("../shared");
  dir /= "data";
  if (std::filesystem::is_directory(dir)) return dir;
  return std::nullopt;
}

std::filesystem::path gptq_binary() {
  const char* env = std::getenv("GPTQ_BINARY");
  return env ? std::filesystem::path(env) : std::filesystem::path("build/gptq-quant");
}

}  // namespace gptq::testing
