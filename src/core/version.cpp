#include "gptq/core/version.h"

#include <torch/version.h>

#include "gptq/core/version_info.h"

namespace gptq {

std::string tool_version() { return GPTQ_VERSION_STRING; }
std::string tool_name() { return "gptq-quant"; }
std::string libtorch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

}  // namespace gptq
