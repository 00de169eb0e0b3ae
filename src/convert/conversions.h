#pragma once
// The conversions behind convert/convert.h, one file each.
#include <nlohmann/json.hpp>

#include "gptq/convert/convert.h"

namespace gptq::convert {

nlohmann::json convert_gptq_to_gguf(const ConvertOptions& options);
// gptq <-> gptq_v2 (options.to names the target).
nlohmann::json convert_gptq_version(const ConvertOptions& options);

}  // namespace gptq::convert
