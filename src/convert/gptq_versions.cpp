// convert --to gptq | gptq_v2: only qzeros differ (v1 stores zero - 1, v2 the
// zero itself); every other tensor and file is copied as stored.
#include <ATen/ATen.h>

#include "conversions.h"
#include "gptq/calib/gptq_weight_source.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/io/safetensors.h"
#include "gptq/pack/checkpoint_writer.h"
#include "gptq/pack/format.h"
#include "gptq/pack/gptq_pack.h"
#include <fstream>

namespace gptq::convert {
namespace fs = std::filesystem;

namespace {

// The source's quantization_config, every key kept.
nlohmann::json read_source_quantization_config(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  GPTQ_CHECK(in.good(), "cannot read '", (dir / "config.json").string(), "'");
  const nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  GPTQ_CHECK(!config.is_discarded() && config.is_object() && config.contains("quantization_config") &&
                 config["quantization_config"].is_object(),
             "'", (dir / "config.json").string(), "' has no quantization_config object");
  return config["quantization_config"];
}

}  // namespace

nlohmann::json convert_gptq_version(const ConvertOptions& options) {
  const std::optional<calib::GptqCheckpointInfo> info = calib::detect_gptq_checkpoint(options.input);
  GPTQ_CHECK(info.has_value(), "'", options.input.string(), "' is not a GPTQ checkpoint (its config.json has no "
             "quantization_config with quant_method gptq)");
  const bool to_v1 = options.to == "gptq";
  const pack::ZeroEncoding source_encoding =
      info->format == "gptq_v2" ? pack::ZeroEncoding::kExact : pack::ZeroEncoding::kMinusOne;
  const pack::ZeroEncoding target_encoding = to_v1 ? pack::ZeroEncoding::kMinusOne : pack::ZeroEncoding::kExact;
  const io::Checkpoint checkpoint = io::Checkpoint::open(options.input);
  const std::unique_ptr<pack::OutputFormat> format = pack::make_output_format(options.to);
  pack::CheckpointWriter writer(options.input, options.output, *format);
  int64_t n_linears = 0;
  for (const std::string& name : checkpoint.names()) {
    if (!name.ends_with(".qzeros")) {
      writer.add(name, checkpoint.load(name));
      continue;
    }
    const std::string prefix = name.substr(0, name.size() - 7);
    const std::optional<solver::Scheme> scheme = info->schemes->resolve(prefix);
    GPTQ_CHECK(scheme.has_value(), options.input.string(), ": '", prefix,
               "' is stored quantized but quantization_config.dynamic excludes it");
    const int bits = scheme->quant.bits;
    pack::GptqTensors packed;
    packed.qweight = checkpoint.load(prefix + ".qweight");
    packed.qzeros = checkpoint.load(name);
    packed.scales = checkpoint.load(prefix + ".scales");
    packed.g_idx = checkpoint.contains(prefix + ".g_idx")
                       ? checkpoint.load(prefix + ".g_idx")
                       : pack::sequential_g_idx(packed.qweight.size(0) * 32 / bits, scheme->quant.group_size);
    const pack::UnpackedGptq unpacked = pack::unpack_gptq(packed, bits, source_encoding);
    if (to_v1) {
      const int64_t n_zero = unpacked.zeros.eq(0).sum().item<int64_t>();
      GPTQ_CHECK(n_zero == 0, prefix, ": ", n_zero, " group zero point(s) of 0, which GPTQ v1 (zero - 1) cannot "
                 "store for vLLM and AutoGPTQ; keep --to gptq_v2, or requantize with 'gptq-quant quantize "
                 "--format gptq' (it raises such zeros to 1)");
    }
    const pack::GptqTensors repacked =
        pack::pack_gptq(unpacked.codes, unpacked.zeros, unpacked.scales, unpacked.g_idx, bits, target_encoding);
    GPTQ_ASSERT(repacked.qweight.equal(packed.qweight), prefix, ": qweight changed in a zero re-encoding");
    writer.add(name, repacked.qzeros);
    ++n_linears;
  }
  nlohmann::json quantization = read_source_quantization_config(options.input);
  quantization["checkpoint_format"] = options.to;
  if (quantization.contains("format")) quantization["format"] = options.to;
  const uint64_t bytes = writer.commit(quantization);
  spdlog::info("wrote '{}': {} linear(s) from {} to {}", options.output.string(), n_linears, info->format, options.to);
  return {{"input", options.input.string()},   {"output", options.output.string()}, {"to", options.to},
          {"source_format", info->format}, {"linears_converted", n_linears}, {"output_bytes", bytes}};
}

}  // namespace gptq::convert
