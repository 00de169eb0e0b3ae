#pragma once
// The tool's own version and the libtorch it was built against, for --version,
// reports and the checkpoint's quantization_config.meta.
#include <string>

namespace gptq {

std::string tool_version();     // "0.1.0"
std::string tool_name();        // "gptq-quant"
std::string libtorch_version(); // "2.15.0" (compile-time TORCH_VERSION)

}  // namespace gptq
