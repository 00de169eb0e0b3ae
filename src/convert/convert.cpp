#include "gptq/convert/convert.h"

#include <chrono>

#include "conversions.h"
#include "gptq/core/error.h"

namespace gptq::convert {

namespace {

struct Target {
  const char* name;
  nlohmann::json (*run)(const ConvertOptions&);
};

// One row per --to value; a new target is one more row.
constexpr Target kTargets[] = {
    {"gptq", convert_gptq_version},
    {"gptq_v2", convert_gptq_version},
    {"compressed-tensors", convert_to_compressed_tensors},
    {"fp16", convert_to_dense},
    {"bf16", convert_to_dense},
    {"fp32", convert_to_dense},
    {"gguf", convert_gptq_to_gguf},
};

}  // namespace

std::vector<std::string> target_names() {
  std::vector<std::string> names;
  for (const Target& target : kTargets) names.emplace_back(target.name);
  return names;
}

nlohmann::json run_convert(const ConvertOptions& options) {
  for (const Target& target : kTargets) {
    if (options.to != target.name) continue;
    const auto start = std::chrono::steady_clock::now();
    nlohmann::json report = target.run(options);
    report["input"] = options.input.string();
    report["output"] = options.output.string();
    report["to"] = options.to;
    report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }
  std::string known;
  for (const Target& target : kTargets) known += (known.empty() ? "" : ", ") + std::string(target.name);
  throw InputError("convert: unknown target '" + options.to + "' (" + known + ")");
}

}  // namespace gptq::convert
