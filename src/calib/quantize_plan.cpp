#include "gptq/calib/quantize_plan.h"

#include <cstdio>

#include "gptq/calib/recipe.h"
#include "gptq/calib/work_dir.h"
#include "gptq/core/error.h"
#include "gptq/model/forward.h"
#include "gptq/solver/solver.h"

namespace gptq::calib {
namespace {

// Full names of every linear of the model, in layer and group order.
std::vector<std::string> linear_modules(const model::ModelConfig& config) {
  std::vector<std::string> names;
  for (int layer = 0; layer < config.n_layers; ++layer) {
    for (const auto& linear : config.layer(layer).linear_names()) names.push_back(config.layer_prefix(layer) + linear);
  }
  return names;
}

// Checks one module's scheme against its [out, in] shape and the job;
// `asked_by` names who chose it (recipe rule, recipe default or flag).
void check_module_scheme(const QuantizeOptions& options, const std::string& full_name, int64_t in_features,
                         const solver::Scheme& scheme, const std::string& reason) {
  const std::string who = !reason.empty()  ? " (" + reason + ")"
                          : options.recipe ? " (" + options.recipe->source + " default)"
                                           : "";
  const int group_size = scheme.quant.group_size;
  const std::string asked_by =
      who.empty() ? "--group-size " + std::to_string(group_size) : "group_size " + std::to_string(group_size) + who;
  GPTQ_CHECK(group_size <= 0 || in_features % group_size == 0, full_name, ": ", asked_by, " does not divide its ",
             in_features, " input columns (vLLM and GPTQModel need in_features % group_size == 0); use a "
             "group size that divides every linear's input width, or -1");
  GPTQ_CHECK(!scheme.static_groups || group_size > 0, full_name, ": static_groups", who,
             " needs a positive group_size (got ", group_size, "): with one group per row there is nothing to fix");
  GPTQ_CHECK(options.method == Method::kGptq || scheme.method == Method::kRtn, full_name, ": method 'gptq'", who,
             " needs calibration data, which 'gptq-quant rtn' does not take; run 'gptq-quant quantize --calib FILE'");
}

// Decides module by module what was asked: the format may choose otherwise
// or be unable to store it (full precision); the rest is checked and recorded.
class Planner {
 public:
  Planner(const QuantizeOptions& options, const pack::OutputFormat& format, const solver::Scheme& default_scheme)
      : options_(options),
        format_(format),
        default_scheme_(default_scheme),
        plan_{solver::SchemeResolver(default_scheme), std::nullopt, false} {}

  // True when the module is quantized.
  bool decide(const std::string& full_name, const std::vector<int64_t>& shape,
              const std::optional<solver::Scheme>& asked_scheme, const std::string& reason) {
    solver::SchemeResolver& schemes = plan_.schemes;
    if (!asked_scheme) {
      schemes.add_rule(solver::SchemeResolver::exact(full_name), std::nullopt, reason);
      return false;
    }
    // The format may decide otherwise (GGUF: llama-quantize's per-tensor types).
    std::string format_why;
    const std::optional<solver::Scheme> scheme = format_.module_scheme(full_name, shape, *asked_scheme, &format_why);
    if (!scheme) {
      schemes.keep_full_precision(full_name, format_why);
      return false;
    }
    if (auto why = format_.cannot_store(shape[0], shape[1], *scheme)) {
      schemes.keep_full_precision(full_name, *why);
      return false;
    }
    check_module_scheme(options_, full_name, shape[1], *scheme, reason);
    if (!(*scheme == default_scheme_)) schemes.add_rule(solver::SchemeResolver::exact(full_name), scheme, reason);
    plan_.calibrated |= scheme->method == Method::kGptq;
    return true;
  }

  QuantizePlan& plan() { return plan_; }

 private:
  const QuantizeOptions& options_;
  const pack::OutputFormat& format_;
  const solver::Scheme default_scheme_;
  QuantizePlan plan_;
};

}  // namespace

std::string lm_head_module(const model::ModelConfig& config) {
  const std::string& tensor = config.arch.lm_head;
  return tensor.ends_with(".weight") ? tensor.substr(0, tensor.size() - 7) : tensor;
}

// The recipe (if any) per module, then what the format makes of it; lm_head
// when a rule asked for it (the asked resolver then has its rule), or when
// the format always stores it quantized (GGUF's output.weight).
QuantizePlan plan_quantize(const QuantizeOptions& options, const model::ModelConfig& config,
                           const pack::OutputFormat& format) {
  const Method default_method = options.method == Method::kRtn ? Method::kRtn : options.default_method;
  const solver::Scheme default_scheme = solver::scheme_of(options.gptq, default_method);
  const std::string lm_head = lm_head_module(config);
  const solver::SchemeResolver asked =
      options.recipe ? resolve_recipe(*options.recipe, default_scheme, linear_modules(config), lm_head)
                     : solver::SchemeResolver(default_scheme);
  Planner planner(options, format, default_scheme);
  for (int layer = 0; layer < config.n_layers; ++layer) {
    for (const auto& linear : config.layer(layer).linear_names()) {
      const std::string full_name = config.layer_prefix(layer) + linear;
      const solver::SchemeResolver::Rule* rule = asked.deciding_rule(full_name);
      planner.decide(full_name, model::linear_shape(config, layer, linear), rule ? rule->scheme : default_scheme,
                     rule ? rule->reason : "");
    }
  }
  QuantizePlan& plan = planner.plan();
  const std::vector<int64_t> head_shape = {config.vocab_size, config.hidden_size};
  bool head_quantized = false;
  if (const solver::SchemeResolver::Rule* rule = asked.deciding_rule(lm_head); rule && rule->scheme) {
    head_quantized = planner.decide(lm_head, head_shape, rule->scheme, rule->reason);
  } else if (format.quantizes_lm_head()) {
    head_quantized = planner.decide(lm_head, head_shape, default_scheme, "");
  }
  if (head_quantized) plan.lm_head = plan.schemes.resolve(lm_head);
  plan.calibrated &= options.method == Method::kGptq;
  return std::move(plan);
}

// --dry-run: one row per linear (module, bits, group, sym, act-order, method, why).
void print_plan(const model::ModelConfig& config, const QuantizePlan& plan) {
  std::vector<std::string> modules = linear_modules(config);
  const std::string lm_head = lm_head_module(config);
  modules.push_back(lm_head);
  size_t width = 6;
  for (const auto& name : modules) width = std::max(width, name.size());
  std::printf("%-*s %4s %6s %5s %9s %6s %5s  %s\n", static_cast<int>(width), "module", "bits", "group", "sym",
              "act-order", "method", "grid", "decided by");
  for (const auto& name : modules) {
    const bool is_head = name == lm_head;
    const std::optional<solver::Scheme> scheme = is_head ? plan.lm_head : plan.schemes.resolve(name);
    const solver::SchemeResolver::Rule* rule = plan.schemes.deciding_rule(name);
    const std::string why = rule && !rule->reason.empty() ? rule->reason
                            : is_head && !scheme          ? "not named by a recipe rule"
                                                          : "default";
    if (!scheme) {
      std::printf("%-*s %4s %6s %5s %9s %6s %5s  %s\n", static_cast<int>(width), name.c_str(), "-", "-", "-", "-",
                  "skip", "-", why.c_str());
      continue;
    }
    std::printf("%-*s %4d %6d %5s %9s %6s %5s  %s\n", static_cast<int>(width), name.c_str(), scheme->quant.bits,
                scheme->quant.group_size, scheme->quant.sym ? "yes" : "no", scheme->act_order() ? "yes" : "no",
                solver::method_name(scheme->method), scheme->grid.empty() ? "int" : scheme->grid.c_str(),
                why.c_str());
  }
  std::fflush(stdout);
}

// Every module's resolved scheme, as one hash for the run's fingerprint.
std::string plan_digest(const model::ModelConfig& config, const QuantizePlan& plan) {
  std::vector<std::string> modules = linear_modules(config);
  const std::string lm_head = lm_head_module(config);
  modules.push_back(lm_head);
  std::string text;
  for (const auto& name : modules) {
    const std::optional<solver::Scheme> scheme = name == lm_head ? plan.lm_head : plan.schemes.resolve(name);
    text += name;
    if (!scheme) {
      text += " skip\n";
      continue;
    }
    char line[160];
    std::snprintf(line, sizeof line, " %d %d %d %d %d %d %.17g %s", scheme->quant.bits, scheme->quant.group_size,
                  scheme->quant.sym, scheme->quant.mse, scheme->desc_act, scheme->static_groups,
                  scheme->damp_percent, solver::method_name(scheme->method));
    text += line;
    // The min-max grid adds nothing, so digests of earlier runs stay valid.
    text += scheme->grid.empty() ? "\n" : " " + scheme->grid + "\n";
  }
  return "fnv1a64:" + hex64(fnv1a64(text.data(), text.size()));
}

}  // namespace gptq::calib
