#include "gptq/gguf/gguf_format.h"

#include <map>
#include <mutex>

#include "gptq/core/error.h"
#include "gptq/gguf/ggml_codec.h"
#include "gptq/gguf/ggml_grid.h"

namespace gptq::gguf {
namespace {

bool is_k_quant(GgmlType type) {
  return type == GgmlType::kQ4_K || type == GgmlType::kQ5_K || type == GgmlType::kQ6_K;
}

int code_bits(GgmlType type) {
  switch (type) {
    case GgmlType::kQ5_K: return 5;
    case GgmlType::kQ6_K: return 6;
    case GgmlType::kQ8_0: return 8;
    default: return 4;
  }
}

GgmlType type_of(const solver::Scheme& scheme) {
  const std::optional<GgmlType> type = parse_ggml_type(scheme.grid);
  GPTQ_ASSERT(type && type_info(*type).quantized, "scheme grid '", scheme.grid, "' is not a quantized ggml type");
  return *type;
}

class GgufFormat : public pack::OutputFormat {
 public:
  explicit GgufFormat(GgufModelPlan plan) : plan_(std::move(plan)) {}

  std::string name() const override { return "gguf"; }

  std::optional<std::string> cannot_store(int64_t rows, int64_t cols, const solver::Scheme& scheme) const override {
    if (scheme.grid.empty()) return "GGUF stores ggml types only";
    const GgmlType type = type_of(scheme);
    if (cols % type_info(type).block_size == 0) return std::nullopt;
    return "rows of " + std::to_string(cols) + " values are not whole " + std::string(type_info(type).name) +
           " blocks";
  }

  std::optional<solver::Scheme> module_scheme(const std::string& full_name, const std::vector<int64_t>& shape,
                                              const solver::Scheme& asked, std::string* why) const override {
    const GgufTensorPlan* tensor = plan_.find(full_name + ".weight");
    GPTQ_ASSERT(tensor != nullptr, full_name, ".weight is not in the GGUF plan");
    GPTQ_ASSERT(shape.size() == 2 && tensor->shape == shape, full_name, ": the GGUF plan's shape differs");
    if (!type_info(tensor->type).quantized) {
      if (why) *why = "llama-quantize keeps " + tensor->name + " in " + std::string(type_info(tensor->type).name);
      return std::nullopt;
    }
    GPTQ_CHECK(is_k_quant(tensor->type) || !asked.act_order() || asked.static_groups, full_name, " (",
               type_info(tensor->type).name, "): --desc-act needs --static-groups in GGUF, whose 32-column blocks "
               "keep columns in their original order (act-order then only changes the solve order)");
    return ggml_scheme(tensor->type, asked);
  }

  solver::Scheme solver_scheme(const solver::Scheme& scheme) const override { return scheme; }

  bool quantizes_lm_head() const override { return plan_.find("lm_head.weight") != nullptr; }

  std::shared_ptr<const solver::QuantGrid> grid(const solver::Scheme& scheme) const override {
    const GgmlType type = type_of(scheme);
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = grids_.find(type);
    if (found == grids_.end()) found = grids_.emplace(type, make_ggml_grid(type)).first;
    return found->second;
  }

  std::vector<std::pair<std::string, at::Tensor>> pack(const std::string& prefix, const pack::SolvedLinear& solved,
                                                       const solver::Scheme& scheme) const override {
    return {{prefix + ".weight", encode_rows(type_of(scheme), solved.codes.cpu(), solved.scales.cpu(),
                                             solved.grid_zeros.cpu())}};
  }

  nlohmann::json quantization_config(const solver::SchemeResolver& schemes,
                                     const pack::RunSettings& settings) const override {
    return {{"format", "gguf"}, {"file_type", gguf_file_type_name(plan_.file_type)}};
  }

 private:
  GgufModelPlan plan_;
  mutable std::mutex mutex_;  // experts of a site are solved on parallel threads
  mutable std::map<GgmlType, std::shared_ptr<const solver::QuantGrid>> grids_;
};

}  // namespace

solver::Scheme ggml_scheme(GgmlType type, const solver::Scheme& asked) {
  solver::Scheme scheme = asked;
  scheme.grid = std::string(type_info(type).name);
  scheme.quant.bits = code_bits(type);
  scheme.quant.group_size = static_cast<int>(ggml_group_size(type));
  scheme.quant.sym = type == GgmlType::kQ4_0 || type == GgmlType::kQ8_0 || type == GgmlType::kQ6_K;
  scheme.quant.mse = false;
  scheme.quant.min_zero = 0;
  scheme.static_groups = asked.static_groups || is_k_quant(type);
  return scheme;
}

std::unique_ptr<pack::OutputFormat> make_gguf_format(GgufModelPlan plan) {
  return std::make_unique<GgufFormat>(std::move(plan));
}

}  // namespace gptq::gguf
