#include "gptq_input.h"

#include <fstream>
#include <sstream>

#include "gptq/core/error.h"
#include "gptq/io/json.h"

namespace gptq::convert {
namespace fs = std::filesystem;

namespace {

const char* kParts[] = {".qweight", ".qzeros", ".scales", ".g_idx"};

nlohmann::json read_object(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in.good(), "cannot read '", path.string(), "'");
  std::ostringstream text;
  text << in.rdbuf();
  nlohmann::json value = io::parse_json_strict(text.str(), path.string());
  GPTQ_CHECK(value.is_object(), "'", path.string(), "' is not a JSON object");
  return value;
}

calib::GptqCheckpointInfo detect(const fs::path& dir) {
  GPTQ_CHECK(fs::is_directory(dir), "input '", dir.string(), "' is not a checkpoint directory");
  std::optional<calib::GptqCheckpointInfo> info = calib::detect_gptq_checkpoint(dir);
  GPTQ_CHECK(info.has_value(), "'", dir.string(), "' is not a GPTQ checkpoint (config.json has no "
             "quantization_config with quant_method gptq)");
  return std::move(*info);
}

}  // namespace

GptqInput::GptqInput(const fs::path& dir)
    : dir_(dir), info_(detect(dir)), checkpoint_(io::Checkpoint::open(dir)) {
  config_ = read_object(dir / "config.json");
  quantization_ = config_.contains("quantization_config") ? config_["quantization_config"]
                                                           : read_object(dir / "quantize_config.json");
  for (const std::string& name : checkpoint_.names()) {
    if (name.ends_with(".qweight")) linears_.push_back(name.substr(0, name.size() - 8));
  }
  GPTQ_CHECK(!linears_.empty(), "'", dir.string(), "' holds no quantized linear (no '.qweight' tensor)");
}

pack::ZeroEncoding GptqInput::encoding() const {
  return info_.format == "gptq_v2" ? pack::ZeroEncoding::kExact : pack::ZeroEncoding::kMinusOne;
}

bool GptqInput::is_linear_part(const std::string& tensor_name) const {
  for (const char* part : kParts) {
    const std::string suffix(part);
    if (tensor_name.ends_with(suffix) &&
        checkpoint_.contains(tensor_name.substr(0, tensor_name.size() - suffix.size()) + ".qweight")) {
      return true;
    }
  }
  return false;
}

solver::Scheme GptqInput::scheme(const std::string& prefix) const {
  const std::optional<solver::Scheme> scheme = info_.schemes->resolve(prefix);
  GPTQ_CHECK(scheme.has_value(), "'", dir_.string(), "': '", prefix,
             "' is stored quantized but quantization_config.dynamic excludes it");
  return *scheme;
}

pack::GptqTensors GptqInput::load_packed(const std::string& prefix) const {
  const solver::Scheme module = scheme(prefix);
  for (const char* part : {".qzeros", ".scales"}) {
    GPTQ_CHECK(checkpoint_.contains(prefix + part), "'", dir_.string(), "': '", prefix, ".qweight' has no '",
               prefix, part, "'");
  }
  pack::GptqTensors packed;
  packed.qweight = checkpoint_.load(prefix + ".qweight");
  packed.qzeros = checkpoint_.load(prefix + ".qzeros");
  packed.scales = checkpoint_.load(prefix + ".scales");
  GPTQ_CHECK(packed.qweight.dim() == 2, "'", dir_.string(), "': '", prefix, ".qweight' is not 2-D");
  packed.g_idx = checkpoint_.contains(prefix + ".g_idx")
                     ? checkpoint_.load(prefix + ".g_idx")
                     : pack::sequential_g_idx(packed.qweight.size(0) * 32 / module.quant.bits,
                                              module.quant.group_size).to(at::kInt);
  return packed;
}

pack::UnpackedGptq GptqInput::load(const std::string& prefix) const {
  try {
    return pack::unpack_gptq(load_packed(prefix), scheme(prefix).quant.bits, encoding());
  } catch (...) {
    rethrow_with_context("'" + dir_.string() + "': " + prefix);
  }
}

}  // namespace gptq::convert
