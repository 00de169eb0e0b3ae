#include "gptq/calib/gptq_weight_source.h"

#include <ATen/ATen.h>

#include <fstream>
#include <sstream>

#include "gptq/core/error.h"
#include "gptq/io/json.h"
#include "gptq/io/safetensors.h"
#include "gptq/pack/gptq_pack.h"

namespace gptq::calib {
namespace fs = std::filesystem;

namespace {

std::optional<nlohmann::json> read_json_file(const fs::path& path) {
  if (!fs::is_regular_file(path)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return io::parse_json_strict(text.str(), path.string());
}

const char* kSuffix = ".weight";

// quantization_config "dynamic" (GPTQModel, vLLM): "-:<regex>" keeps a
// module unquantized, "+:<regex>" or "<regex>" overrides bits / group_size / sym.
void add_dynamic_rules(const nlohmann::json& dynamic, const fs::path& dir,
                       solver::SchemeResolver& schemes) {
  GPTQ_CHECK(dynamic.is_object(), "'", dir.string(), "': quantization_config.dynamic must be an object");
  for (const auto& [key, overrides] : dynamic.items()) {
    if (key.starts_with("-:")) {
      schemes.add_rule(key.substr(2), std::nullopt, "dynamic exclusion");
      continue;
    }
    GPTQ_CHECK(overrides.is_object(), "'", dir.string(), "': quantization_config.dynamic['", key,
               "'] must be an object");
    solver::Scheme scheme = schemes.default_scheme();
    scheme.quant.bits = overrides.value("bits", scheme.quant.bits);
    scheme.quant.group_size = overrides.value("group_size", scheme.quant.group_size);
    scheme.quant.sym = overrides.value("sym", scheme.quant.sym);
    schemes.add_rule(key.starts_with("+:") ? key.substr(2) : key, scheme, "dynamic override");
  }
}

}  // namespace

std::optional<GptqCheckpointInfo> detect_gptq_checkpoint(const fs::path& dir) {
  std::optional<nlohmann::json> quant;
  if (auto config = read_json_file(dir / "config.json");
      config && config->contains("quantization_config")) {
    quant = (*config)["quantization_config"];
  } else if (auto standalone = read_json_file(dir / "quantize_config.json")) {
    quant = *standalone;
  }
  if (!quant || !quant->is_object()) return std::nullopt;
  const std::string method = quant->value("quant_method", std::string("gptq"));
  if (method != "gptq") return std::nullopt;
  const std::string format = quant->value("checkpoint_format", std::string("gptq"));
  GPTQ_CHECK_SUPPORTED(format == "gptq" || format == "gptq_v2", "'", dir.string(),
                       "': GPTQ checkpoint_format '", format,
                       "' is not supported (\"gptq\" v1 or \"gptq_v2\")");
  GptqCheckpointInfo info;
  info.format = format;
  info.bits = quant->value("bits", 4);
  info.group_size = quant->value("group_size", 128);
  info.desc_act = quant->value("desc_act", false);
  info.sym = quant->value("sym", true);
  GPTQ_CHECK(info.bits == 2 || info.bits == 3 || info.bits == 4 || info.bits == 8, "'",
             dir.string(), "': quantization_config bits must be 2, 3, 4 or 8, got ", info.bits);
  solver::Scheme scheme;
  scheme.quant.bits = info.bits;
  scheme.quant.group_size = info.group_size;
  scheme.quant.sym = info.sym;
  try {
    info.schemes = std::make_shared<solver::SchemeResolver>(scheme);
    if (quant->contains("dynamic") && !(*quant)["dynamic"].is_null()) {
      add_dynamic_rules((*quant)["dynamic"], dir, *info.schemes);
    }
  } catch (...) {
    rethrow_with_context("'" + dir.string() + "'");
  }
  return info;
}

GptqWeightSource::GptqWeightSource(const fs::path& dir) : dir_(dir) {
  auto info = detect_gptq_checkpoint(dir);
  GPTQ_CHECK(info.has_value(), "'", dir.string(),
             "' is not a GPTQ checkpoint (config.json has no GPTQ quantization_config)");
  info_ = *info;
  checkpoint_ = std::make_unique<io::Checkpoint>(io::Checkpoint::open(dir));
}

GptqWeightSource::~GptqWeightSource() = default;

std::optional<std::string> GptqWeightSource::quantized_prefix(const std::string& full_name) const {
  const size_t suffix_len = std::char_traits<char>::length(kSuffix);
  if (full_name.size() <= suffix_len ||
      full_name.compare(full_name.size() - suffix_len, suffix_len, kSuffix) != 0) {
    return std::nullopt;
  }
  std::string prefix = full_name.substr(0, full_name.size() - suffix_len);
  if (checkpoint_->contains(full_name) || !checkpoint_->contains(prefix + ".qweight")) {
    return std::nullopt;
  }
  return prefix;
}

at::Tensor GptqWeightSource::tensor(const std::string& full_name, c10::ScalarType dtype,
                                    c10::Device device) const {
  if (auto prefix = quantized_prefix(full_name)) {
    const std::optional<solver::Scheme> scheme = info_.schemes->resolve(*prefix);
    GPTQ_CHECK(scheme.has_value(), describe(), ": '", *prefix,
               "' is stored quantized but quantization_config.dynamic excludes it");
    const int bits = scheme->quant.bits;
    pack::GptqTensors packed;
    packed.qweight = checkpoint_->load(*prefix + ".qweight");
    packed.qzeros = checkpoint_->load(*prefix + ".qzeros");
    packed.scales = checkpoint_->load(*prefix + ".scales");
    packed.g_idx = checkpoint_->contains(*prefix + ".g_idx")
                       ? checkpoint_->load(*prefix + ".g_idx")
                       : pack::sequential_g_idx(packed.qweight.size(0) * 32 / bits,
                                                scheme->quant.group_size);
    const pack::ZeroEncoding encoding =
        info_.format == "gptq_v2" ? pack::ZeroEncoding::kExact : pack::ZeroEncoding::kMinusOne;
    try {
      return pack::dequantize_gptq(packed, bits, encoding).to(device, dtype);
    } catch (...) {
      rethrow_with_context(*prefix);
    }
  }
  GPTQ_CHECK(checkpoint_->contains(full_name), "tensor '", full_name, "' not found in ",
             describe());
  return checkpoint_->load(full_name, dtype, device);
}

bool GptqWeightSource::contains(const std::string& full_name) const {
  return checkpoint_->contains(full_name) || quantized_prefix(full_name).has_value();
}

std::string GptqWeightSource::describe() const {
  return "GPTQ checkpoint '" + dir_.string() + "' (" + info_.format + ", " +
         std::to_string(info_.bits) + "-bit, group " + std::to_string(info_.group_size) + ")";
}

std::unique_ptr<model::WeightSource> open_weight_source(const fs::path& dir) {
  if (detect_gptq_checkpoint(dir)) return std::make_unique<GptqWeightSource>(dir);
  return std::make_unique<model::CheckpointWeightSource>(dir);
}

}  // namespace gptq::calib
