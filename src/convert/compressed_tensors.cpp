// convert --to compressed-tensors: every quantized linear as pack-quantized
// tensors (pack_quantized.h), the schemes as config_groups, the modules left
// in full precision as "ignore"; other tensors and files copied as stored.
#include <ATen/ATen.h>

#include <map>
#include <set>
#include <tuple>

#include "conversions.h"
#include "gptq/convert/pack_quantized.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"
#include "gptq_input.h"
#include "output_dir.h"

namespace gptq::convert {

namespace {

constexpr const char* kFormat = "pack-quantized";

// What a config group is keyed by: the settings the stored tensors depend on.
using SchemeKey = std::tuple<int, int, bool>;
SchemeKey key_of(const solver::QuantConfig& quant) { return {quant.bits, quant.group_size, quant.sym}; }

std::string exact_name_regex(const std::vector<std::string>& names) {
  std::string regex = "re:^(?:";
  for (size_t idx = 0; idx < names.size(); ++idx) {
    if (idx > 0) regex += "|";
    for (char c : names[idx]) {
      if (c == '.' || c == '(' || c == ')' || c == '[' || c == ']' || c == '+' || c == '*' || c == '?') regex += '\\';
      regex += c;
    }
  }
  return regex + ")$";
}

// Linears the checkpoint keeps in full precision: every 2-D "<p>.weight" that
// is not quantized (embeddings included, which the package skips anyway) and
// lm_head, which transformers builds as a Linear even when it is tied.
nlohmann::json ignore_list(const GptqInput& input) {
  std::set<std::string> ignore;
  const std::set<std::string> quantized(input.linears().begin(), input.linears().end());
  for (const std::string& name : input.checkpoint().names()) {
    if (!name.ends_with(".weight") || input.checkpoint().info(name).shape.size() != 2) continue;
    ignore.insert(name.substr(0, name.size() - 7));
  }
  if (!quantized.contains("lm_head")) ignore.insert("lm_head");
  return nlohmann::json(std::vector<std::string>(ignore.begin(), ignore.end()));
}

nlohmann::json quantization_config(const GptqInput& input,
                                   const std::map<SchemeKey, std::vector<std::string>>& groups) {
  const solver::QuantConfig& defaults = input.info().schemes->default_scheme().quant;
  auto group = [](const solver::QuantConfig& quant, nlohmann::json targets) {
    return nlohmann::json{{"targets", std::move(targets)},
                          {"weights", pack_quantized_weights_args(quant)},
                          {"input_activations", nullptr},
                          {"output_activations", nullptr},
                          {"format", kFormat}};
  };
  // The default scheme takes every Linear; the package and vLLM prefer a
  // name match over a class match, so the others name their modules.
  nlohmann::json config_groups = {{"group_0", group(defaults, {"Linear"})}};
  for (const auto& [key, names] : groups) {
    if (key == key_of(defaults)) continue;
    solver::QuantConfig quant = defaults;
    std::tie(quant.bits, quant.group_size, quant.sym) = key;
    config_groups["group_" + std::to_string(config_groups.size())] = group(quant, {exact_name_regex(names)});
  }
  return {{"quant_method", "compressed-tensors"},
          {"format", kFormat},
          {"quantization_status", "compressed"},
          {"config_groups", config_groups},
          {"ignore", ignore_list(input)},
          {"kv_cache_scheme", nullptr},
          {"global_compression_ratio", nullptr},
          {"sparsity_config", nlohmann::json::object()},
          {"transform_config", nlohmann::json::object()}};
}

}  // namespace

nlohmann::json convert_to_compressed_tensors(const ConvertOptions& options) {
  const GptqInput input(options.input);
  OutputDir output(options.input, options.output);
  int64_t n_copied = 0;
  for (const std::string& name : input.checkpoint().names()) {
    if (input.is_linear_part(name)) continue;
    output.add(name, input.checkpoint().load(name));
    ++n_copied;
  }
  std::map<SchemeKey, std::vector<std::string>> groups;
  Progress progress("converting", static_cast<int>(input.linears().size()), options.progress);
  for (const std::string& prefix : input.linears()) {
    const solver::QuantConfig quant = input.scheme(prefix).quant;
    PackQuantized packed;
    try {
      packed = to_pack_quantized(input.load(prefix), quant);
    } catch (...) {
      rethrow_with_context(detail::concat("'", input.dir().string(), "': ", prefix,
                                          " cannot be written as compressed-tensors ", kFormat));
    }
    output.add(prefix + ".weight_packed", packed.weight_packed);
    output.add(prefix + ".weight_scale", packed.weight_scale);
    if (packed.weight_zero_point.defined()) output.add(prefix + ".weight_zero_point", packed.weight_zero_point);
    output.add(prefix + ".weight_shape", packed.weight_shape);
    groups[key_of(quant)].push_back(prefix);
    progress.advance(prefix);
  }
  progress.finish();
  nlohmann::json config = input.config();
  config["quantization_config"] = quantization_config(input, groups);
  const uint64_t bytes = output.commit(config, std::nullopt);
  spdlog::info("wrote '{}': {} linear(s) as compressed-tensors {} in {} config group(s)", options.output.string(),
               input.linears().size(), kFormat, config["quantization_config"]["config_groups"].size());
  return {{"source_format", input.info().format},
          {"linears_converted", input.linears().size()},
          {"config_groups", config["quantization_config"]["config_groups"].size()},
          {"tensors_copied", n_copied},
          {"input_bytes", input.checkpoint().total_bytes()},
          {"output_bytes", bytes},
          {"exact", true}};
}

}  // namespace gptq::convert
