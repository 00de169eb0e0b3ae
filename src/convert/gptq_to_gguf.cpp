// convert --to gguf: GPTQ codes re-encoded as ggml blocks, value for value.
#include <ATen/ATen.h>

#include <map>

#include "gptq/calib/gptq_weight_source.h"
#include "gptq/convert/convert.h"
#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/gguf/gguf_model.h"
#include "gptq/io/safetensors.h"
#include "gptq/model/config.h"
#include "gptq/pack/gptq_pack.h"
#include "conversions.h"

namespace gptq::convert {
namespace fs = std::filesystem;

namespace {

constexpr int kGroupSize = 32;

// The ggml type a GPTQ scheme maps onto code for code, or why it does not.
std::optional<gguf::GgmlType> ggml_type_of(const solver::Scheme& scheme, std::string* why) {
  const solver::QuantConfig& quant = scheme.quant;
  if (quant.group_size != kGroupSize) {
    *why = "group_size " + std::to_string(quant.group_size) + " (ggml's legacy blocks hold 32 columns)";
    return std::nullopt;
  }
  if (quant.bits == 4) return quant.sym ? gguf::GgmlType::kQ4_0 : gguf::GgmlType::kQ4_1;
  if (quant.bits == 8 && quant.sym) return gguf::GgmlType::kQ8_0;
  *why = std::to_string(quant.bits) + "-bit " + (quant.sym ? "symmetric" : "asymmetric") +
         " (ggml stores 4-bit sym/asym and 8-bit sym groups of 32 exactly)";
  return std::nullopt;
}

gguf::GgufFileType file_type_of(gguf::GgmlType type) {
  switch (type) {
    case gguf::GgmlType::kQ4_1: return gguf::GgufFileType::kQ4_1;
    case gguf::GgmlType::kQ8_0: return gguf::GgufFileType::kQ8_0;
    default: return gguf::GgufFileType::kQ4_0;
  }
}

std::string quantize_instead(const ConvertOptions& options) {
  return "; quantize the full-precision model instead: gptq-quant quantize --model <full-precision model> --output " +
         options.output.string() + " --format gguf --gguf-type q4_k_m --calib <text>";
}

// One linear's ggml rows from its GPTQ tensors; InputError naming it when a
// group has no exact ggml encoding.
at::Tensor encode_linear(const std::string& prefix, const pack::UnpackedGptq& unpacked, gguf::GgmlType type,
                         const ConvertOptions& options) {
  const int64_t in_features = unpacked.codes.size(1);
  const at::Tensor contiguous = pack::sequential_g_idx(in_features, kGroupSize).to(at::kInt);
  GPTQ_CHECK(unpacked.g_idx.to(at::kInt).equal(contiguous), prefix,
             ": g_idx is not in column order (act-order without static groups); ggml blocks cannot reorder "
             "columns", quantize_instead(options));
  const at::Tensor zeros = unpacked.zeros.to(at::kFloat);
  const at::Tensor scales = unpacked.scales;
  at::Tensor grid_zeros;
  if (type == gguf::GgmlType::kQ4_1) {
    // value = scale * (q - zero) = d q + m with d = scale, m = -scale * zero (exact in float32).
    grid_zeros = -scales * zeros;
    const at::Tensor inexact = grid_zeros.to(at::kHalf).to(at::kFloat).ne(grid_zeros);
    const int64_t n_inexact = inexact.sum().item<int64_t>();
    GPTQ_CHECK(n_inexact == 0, prefix, ": ", n_inexact, " of ", inexact.numel(),
               " group(s) have an offset -scale*zero that fp16 (Q4_1's m) cannot hold exactly",
               quantize_instead(options));
  } else {
    const int zero = type == gguf::GgmlType::kQ8_0 ? 128 : 8;
    const int64_t off = zeros.ne(zero).sum().item<int64_t>();
    GPTQ_CHECK(off == 0, prefix, ": ", off, " group(s) have a zero point other than ", zero,
               " (not a symmetric grid)", quantize_instead(options));
    grid_zeros = zeros;
    if (type == gguf::GgmlType::kQ8_0) {
      const int64_t n_min = unpacked.codes.eq(0).sum().item<int64_t>();
      GPTQ_CHECK(n_min == 0, prefix, ": ", n_min, " weight(s) hold code 0 (q = -128), which Q8_0 does not store "
                 "(llama.cpp's kernels take -127..127)", quantize_instead(options));
    }
  }
  return gguf::encode_rows(type, unpacked.codes, scales, grid_zeros);
}

}  // namespace

nlohmann::json convert_gptq_to_gguf(const ConvertOptions& options) {
  const std::optional<calib::GptqCheckpointInfo> info = calib::detect_gptq_checkpoint(options.input);
  GPTQ_CHECK(info.has_value(), "'", options.input.string(), "' is not a GPTQ checkpoint (its config.json has no "
             "quantization_config with quant_method gptq); a full-precision model goes through 'gptq-quant "
             "quantize --format gguf'");
  std::error_code ec;
  GPTQ_CHECK(!fs::exists(options.output, ec), "output '", options.output.string(),
             "' already exists; choose a new file or remove it");
  const model::ModelConfig config = model::load_model_config(options.input);
  const io::Checkpoint checkpoint = io::Checkpoint::open(options.input);
  const pack::ZeroEncoding encoding =
      info->format == "gptq_v2" ? pack::ZeroEncoding::kExact : pack::ZeroEncoding::kMinusOne;

  std::string why;
  const std::optional<gguf::GgmlType> default_type = ggml_type_of(info->schemes->default_scheme(), &why);
  GPTQ_CHECK(default_type.has_value(), "'", options.input.string(), "': its scheme, ", why,
             ", has no exact GGUF encoding", quantize_instead(options));

  // The source as the unquantized model would list it: "<p>.qweight" stands for "<p>.weight".
  std::vector<gguf::SourceTensor> sources;
  std::map<std::string, std::string> quantized;  // "<p>.weight" -> "<p>"
  for (const gguf::SourceTensor& tensor : gguf::source_tensors(checkpoint)) {
    const std::string& name = tensor.name;
    const size_t dot = name.rfind('.');
    const std::string suffix = dot == std::string::npos ? "" : name.substr(dot + 1);
    if (suffix == "qzeros" || suffix == "scales" || suffix == "g_idx") continue;
    if (suffix != "qweight") {
      sources.push_back(tensor);
      continue;
    }
    const std::string prefix = name.substr(0, dot);
    const std::optional<solver::Scheme> scheme = info->schemes->resolve(prefix);
    GPTQ_CHECK(scheme.has_value(), options.input.string(), ": '", prefix,
               "' is stored quantized but quantization_config.dynamic excludes it");
    const int64_t out_features = tensor.shape.at(1);
    const int64_t in_features = tensor.shape.at(0) * 32 / scheme->quant.bits;
    sources.push_back({prefix + ".weight", {out_features, in_features}});
    quantized[prefix + ".weight"] = prefix;
  }
  std::vector<gguf::SourceTensor> ordered = sources;
  std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  gguf::GgufModelPlan plan = gguf::plan_gguf_model(config, ordered, file_type_of(*default_type));
  // Each quantized module keeps its own scheme's type (a mixed checkpoint's "dynamic" rules).
  for (gguf::GgufTensorPlan& tensor : plan.tensors) {
    const auto found = quantized.find(tensor.hf_name);
    if (found == quantized.end()) continue;
    const std::optional<gguf::GgmlType> type = ggml_type_of(*info->schemes->resolve(found->second), &why);
    GPTQ_CHECK(type.has_value(), found->second, ": its scheme, ", why, ", has no exact GGUF encoding",
               quantize_instead(options));
    tensor.type = *type;
  }

  int64_t n_converted = 0;
  Progress progress("converting", static_cast<int>(quantized.size()), options.progress);
  const uint64_t bytes = gguf::write_gguf_model(
      options.output, config, plan, checkpoint, [&](const gguf::GgufTensorPlan& tensor) -> at::Tensor {
        const auto found = quantized.find(tensor.hf_name);
        if (found == quantized.end()) return at::Tensor();
        const std::string& prefix = found->second;
        const int bits = info->schemes->resolve(prefix)->quant.bits;
        pack::GptqTensors packed;
        packed.qweight = checkpoint.load(prefix + ".qweight");
        packed.qzeros = checkpoint.load(prefix + ".qzeros");
        packed.scales = checkpoint.load(prefix + ".scales");
        packed.g_idx = checkpoint.contains(prefix + ".g_idx")
                           ? checkpoint.load(prefix + ".g_idx")
                           : pack::sequential_g_idx(packed.qweight.size(0) * 32 / bits, kGroupSize);
        try {
          const at::Tensor rows = encode_linear(prefix, pack::unpack_gptq(packed, bits, encoding), tensor.type, options);
          ++n_converted;
          progress.advance(prefix);
          return rows;
        } catch (...) {
          rethrow_with_context(options.input.string());
        }
      });
  progress.finish();
  spdlog::info("wrote '{}': {} linear(s) re-encoded exactly from '{}' ({}), file type {}", options.output.string(),
               n_converted, options.input.string(), info->format, gguf::gguf_file_type_name(plan.file_type));
  return {{"input", options.input.string()},   {"output", options.output.string()},
          {"to", "gguf"},                      {"source_format", info->format},
          {"file_type", gguf::gguf_file_type_name(plan.file_type)},
          {"linears_converted", n_converted}, {"output_bytes", bytes}};
}

}  // namespace gptq::convert
