#include "gptq/convert/convert.h"

#include "conversions.h"
#include "gptq/core/error.h"

namespace gptq::convert {

std::vector<std::string> target_names() { return {"gguf", "gptq", "gptq_v2"}; }

nlohmann::json run_convert(const ConvertOptions& options) {
  GPTQ_CHECK(std::filesystem::is_directory(options.input), "input '", options.input.string(),
             "' is not a checkpoint directory");
  if (options.to == "gguf") return convert_gptq_to_gguf(options);
  if (options.to == "gptq" || options.to == "gptq_v2") return convert_gptq_version(options);
  throw InputError("convert: unknown target '" + options.to +
                   "' (gguf, gptq, gptq_v2; compressed-tensors and fp16/bf16/fp32 are not built yet)");
}

}  // namespace gptq::convert
