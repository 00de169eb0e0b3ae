// The GPTQ output formats: v1 and, as a small variation of it, v2.
#include <optional>

#include "gptq/core/error.h"
#include "gptq/core/version.h"
#include "gptq/pack/format.h"
#include "gptq/pack/gptq_pack.h"

namespace gptq::pack {
namespace {

class GptqV1Format : public OutputFormat {
 public:
  std::string name() const override { return "gptq"; }

  std::optional<std::string> cannot_store(int64_t rows, int64_t cols,
                                          const solver::Scheme& scheme) const override {
    const int bits = scheme.quant.bits;
    const int64_t multiple = bits == 3 ? 32 : 32 / bits;
    if (rows % multiple == 0 && cols % multiple == 0) return std::nullopt;
    return "shape not packable at " + std::to_string(bits) + " bits (needs out and in multiples of " +
           std::to_string(multiple) + ")";
  }

  solver::Scheme solver_scheme(const solver::Scheme& scheme) const override {
    solver::Scheme solved = scheme;
    solved.quant.min_zero = scheme.quant.sym ? 0 : 1;
    return solved;
  }

  std::vector<std::pair<std::string, at::Tensor>> pack(const std::string& prefix,
                                                       const SolvedLinear& solved,
                                                       const solver::Scheme& scheme) const override {
    GptqTensors packed = pack_gptq(solved.codes, solved.zeros, solved.scales, solved.g_idx,
                                   scheme.quant.bits, zero_encoding());
    return {{prefix + ".qweight", packed.qweight},
            {prefix + ".qzeros", packed.qzeros},
            {prefix + ".scales", packed.scales},
            {prefix + ".g_idx", packed.g_idx}};
  }

  nlohmann::json quantization_config(const solver::SchemeResolver& schemes,
                                     const RunSettings& settings) const override {
    const solver::QuantConfig& quant = schemes.default_scheme().quant;
    nlohmann::json meta = {
        {"damp_percent", settings.damp_percent},
        {"true_sequential", settings.true_sequential},
        {"static_groups", settings.static_groups},
        {"mse", quant.mse},
        {"method", settings.method},
        {"quantizer", nlohmann::json::array({tool_name() + ":" + tool_version()})},
    };
    nlohmann::json config = {
        {"quant_method", "gptq"},
        {"bits", quant.bits},
        {"group_size", quant.group_size},
        {"desc_act", settings.desc_act},
        {"sym", quant.sym},
        {"lm_head", settings.lm_head},
        {"checkpoint_format", name()},
        {"format", name()},
        {"pack_dtype", "int32"},
        {"damp_percent", settings.damp_percent},
        {"static_groups", settings.static_groups},
        {"true_sequential", settings.true_sequential},
        {"meta", meta},
    };
    // GPTQModel / vLLM "dynamic": "-:<regex>" keeps a module as nn.Linear,
    // "+:<regex>": {overrides} quantizes it with other settings.
    nlohmann::json dynamic = nlohmann::json::object();
    for (const auto& rule : schemes.rules()) {
      if (!rule.scheme) {
        dynamic["-:" + rule.pattern] = nlohmann::json::object();
        continue;
      }
      // The keys loaders read per module (vLLM's override_config: these four).
      dynamic["+:" + rule.pattern] = {{"bits", rule.scheme->quant.bits},
                                      {"group_size", rule.scheme->quant.group_size},
                                      {"sym", rule.scheme->quant.sym},
                                      {"desc_act", rule.scheme->act_order()}};
    }
    if (!dynamic.empty()) config["dynamic"] = dynamic;
    return config;
  }

 protected:
  virtual ZeroEncoding zero_encoding() const { return ZeroEncoding::kMinusOne; }
};

// v2 differs only in storing the zeros as they are, so no grid needs a floor.
class GptqV2Format : public GptqV1Format {
 public:
  std::string name() const override { return "gptq_v2"; }
  solver::Scheme solver_scheme(const solver::Scheme& scheme) const override {
    solver::Scheme solved = scheme;
    solved.quant.min_zero = 0;
    return solved;
  }

 protected:
  ZeroEncoding zero_encoding() const override { return ZeroEncoding::kExact; }
};

}  // namespace

std::unique_ptr<OutputFormat> make_output_format(const std::string& name) {
  if (name == "gptq" || name == "gptq_v1") return std::make_unique<GptqV1Format>();
  if (name == "gptq_v2") return std::make_unique<GptqV2Format>();
  throw InputError("--format '" + name + "': expected gptq (GPTQ v1) or gptq_v2");
}

std::vector<std::string> output_format_names() { return {"gptq", "gptq_v2"}; }

}  // namespace gptq::pack
