// convert --to gptq | gptq_v2: v1 stores zero - 1, v2 the zero itself, so only
// qzeros change; qweight, scales, g_idx and every other tensor and file are
// copied as stored. A v2 zero of 0 has no v1 encoding (v1_zeros.h).
#include <ATen/ATen.h>

#include "conversions.h"
#include "gptq/convert/v1_zeros.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"
#include "gptq_input.h"
#include "output_dir.h"

namespace gptq::convert {

namespace {

pack::ZeroEncoding encoding_of(const std::string& format) {
  return format == "gptq_v2" ? pack::ZeroEncoding::kExact : pack::ZeroEncoding::kMinusOne;
}

// Refuses (InputError) when any zero is 0: the count, the first module, the way out.
void check_v1_representable(const GptqInput& input) {
  int64_t n_groups = 0;
  int64_t n_modules = 0;
  std::string first;
  int64_t first_count = 0;
  for (const std::string& prefix : input.linears()) {
    const int64_t n_zero = count_zero_zeros(input.load(prefix));
    if (n_zero == 0) continue;
    n_groups += n_zero;
    if (n_modules++ == 0) {
      first = prefix;
      first_count = n_zero;
    }
  }
  GPTQ_CHECK(n_groups == 0, "'", input.dir().string(), "': ", n_groups, " group(s) in ", n_modules,
             " module(s) have asymmetric zero point(s) of 0, which GPTQ v1 (zero - 1 per field) cannot hold "
             "for vLLM and AutoGPTQ; first: ", first, " (", first_count, " group(s)). Keep gptq_v2 (GPTQModel "
             "loads it), or pass --allow-lossy to re-encode those groups on the nearest v1 grid (reported)");
}

}  // namespace

nlohmann::json convert_gptq_version(const ConvertOptions& options) {
  const GptqInput input(options.input);
  const pack::ZeroEncoding target = encoding_of(options.to);
  OutputDir output(options.input, options.output);
  if (target == pack::ZeroEncoding::kMinusOne && !options.allow_lossy) check_v1_representable(input);

  nlohmann::json lossy_modules = nlohmann::json::array();
  int64_t n_changed = 0;
  int64_t n_copied = 0;
  for (const std::string& name : input.checkpoint().names()) {
    if (!input.is_linear_part(name)) {
      output.add(name, input.checkpoint().load(name));
      ++n_copied;
    }
  }
  Progress progress("converting", static_cast<int>(input.linears().size()), options.progress);
  for (const std::string& prefix : input.linears()) {
    const int bits = input.scheme(prefix).quant.bits;
    const pack::GptqTensors stored = input.load_packed(prefix);
    pack::UnpackedGptq linear = input.load(prefix);
    bool reencoded = false;
    if (target == pack::ZeroEncoding::kMinusOne && count_zero_zeros(linear) > 0) {
      V1Reencoding v1 = reencode_for_v1(linear, bits);
      progress.clear_line();
      spdlog::warn("{}: {} group(s) with zero 0 re-encoded for v1 ({} on a new scale), max |dW| {:.3g}", prefix,
                   v1.n_groups_changed, v1.n_groups_requantized, v1.max_abs_change);
      lossy_modules.push_back({{"name", prefix},
                               {"groups_changed", v1.n_groups_changed},
                               {"groups_requantized", v1.n_groups_requantized},
                               {"max_abs_change", v1.max_abs_change}});
      n_changed += v1.n_groups_changed;
      linear = std::move(v1.linear);
      reencoded = true;
    }
    const pack::GptqTensors packed =
        pack::pack_gptq(linear.codes, linear.zeros, linear.scales, linear.g_idx, bits, target);
    GPTQ_ASSERT(reencoded || packed.qweight.equal(stored.qweight), prefix, ": qweight changed in a zero re-encoding");
    output.add(prefix + ".qweight", reencoded ? packed.qweight : stored.qweight);
    output.add(prefix + ".qzeros", packed.qzeros);
    output.add(prefix + ".scales", reencoded ? packed.scales : stored.scales);
    if (input.checkpoint().contains(prefix + ".g_idx")) output.add(prefix + ".g_idx", stored.g_idx);
    progress.advance(prefix);
  }
  progress.finish();

  nlohmann::json quantization = input.quantization();
  quantization["checkpoint_format"] = options.to;
  if (quantization.contains("format")) quantization["format"] = options.to;
  nlohmann::json config = input.config();
  if (config.contains("quantization_config")) config["quantization_config"] = quantization;
  const uint64_t bytes = output.commit(config, quantization);
  spdlog::info("wrote '{}': {} linear(s) from {} to {}{}", options.output.string(), input.linears().size(),
               input.info().format, options.to,
               n_changed > 0 ? " (" + std::to_string(n_changed) + " group(s) re-encoded, see the report)" : "");
  nlohmann::json report = {{"source_format", input.info().format},
                           {"linears_converted", input.linears().size()},
                           {"tensors_copied", n_copied},
                           {"input_bytes", input.checkpoint().total_bytes()},
                           {"output_bytes", bytes},
                           {"exact", n_changed == 0}};
  if (n_changed > 0) report["lossy"] = {{"groups_changed", n_changed}, {"modules", lossy_modules}};
  return report;
}

}  // namespace gptq::convert
