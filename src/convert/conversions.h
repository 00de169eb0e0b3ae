#pragma once
// The conversions behind convert/convert.h, one file each; each returns its
// part of the report (run_convert adds input, output, to, seconds).
#include <nlohmann/json.hpp>

#include "gptq/convert/convert.h"

namespace gptq::convert {

nlohmann::json convert_gptq_to_gguf(const ConvertOptions& options);
// gptq <-> gptq_v2 (options.to names the target): gptq_versions.cpp.
nlohmann::json convert_gptq_version(const ConvertOptions& options);
// compressed-tensors pack-quantized: compressed_tensors.cpp.
nlohmann::json convert_to_compressed_tensors(const ConvertOptions& options);
// fp16 | bf16 | fp32: dequantize.cpp.
nlohmann::json convert_to_dense(const ConvertOptions& options);

}  // namespace gptq::convert
