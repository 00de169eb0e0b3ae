// convert --to fp16 | bf16 | fp32: the checkpoint its GPTQ loaders compute,
// stored dense: W = (code - zero) * scale in fp32 (exact: an 8-bit integer
// times an fp16 scale fits fp32's mantissa), rounded once to the target dtype;
// every other floating tensor cast to it; config.json without
// quantization_config, so transformers loads it as a plain model.
#include <ATen/ATen.h>

#include "conversions.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"
#include "gptq_input.h"
#include "output_dir.h"

namespace gptq::convert {

namespace {

c10::ScalarType dtype_of(const std::string& target) {
  if (target == "fp16") return at::kHalf;
  if (target == "bf16") return at::kBFloat16;
  GPTQ_ASSERT(target == "fp32", "no dtype for target ", target);
  return at::kFloat;
}

// The dtype name transformers writes in config.json.
const char* config_dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    default: return "float32";
  }
}

}  // namespace

nlohmann::json convert_to_dense(const ConvertOptions& options) {
  const GptqInput input(options.input);
  const c10::ScalarType dtype = dtype_of(options.to);
  OutputDir output(options.input, options.output);
  int64_t n_copied = 0;
  for (const std::string& name : input.checkpoint().names()) {
    if (input.is_linear_part(name)) continue;
    const at::Tensor tensor = input.checkpoint().load(name);
    output.add(name, at::isFloatingType(tensor.scalar_type()) ? tensor.to(dtype) : tensor);
    ++n_copied;
  }
  Progress progress("converting", static_cast<int>(input.linears().size()), options.progress);
  for (const std::string& prefix : input.linears()) {
    GPTQ_CHECK(!input.checkpoint().contains(prefix + ".weight"), "'", input.dir().string(), "': '", prefix,
               "' holds both a dense weight and a qweight");
    at::Tensor weight;
    try {
      weight = pack::dequantize_gptq(input.load_packed(prefix), input.scheme(prefix).quant.bits, input.encoding());
    } catch (...) {
      rethrow_with_context("'" + input.dir().string() + "': " + prefix);
    }
    output.add(prefix + ".weight", weight.to(dtype));
    progress.advance(prefix);
  }
  progress.finish();
  nlohmann::json config = input.config();
  config.erase("quantization_config");
  // transformers 5 writes "dtype", earlier versions "torch_dtype": keep whichever the source has.
  const bool has_dtype = config.contains("dtype");
  if (has_dtype) config["dtype"] = config_dtype_name(dtype);
  if (config.contains("torch_dtype") || !has_dtype) config["torch_dtype"] = config_dtype_name(dtype);
  const uint64_t bytes = output.commit(config, std::nullopt);
  spdlog::info("wrote '{}': {} linear(s) dequantized to {}", options.output.string(), input.linears().size(),
               options.to);
  return {{"source_format", input.info().format},
          {"linears_converted", input.linears().size()},
          {"tensors_copied", n_copied},
          {"dtype", config_dtype_name(dtype)},
          {"input_bytes", input.checkpoint().total_bytes()},
          {"output_bytes", bytes},
          {"exact", dtype == at::kFloat}};
}

}  // namespace gptq::convert
