#pragma once
// QuantizePlan: what a quantize run will do to every module, decided before
// any tensor is loaded, so a bad recipe, flag or shape fails in the first
// second, --dry-run can print it, and --resume can fingerprint it.
//
// For each linear of every layer, then lm_head:
//   asked     the recipe rule that decides the module (calib/recipe.h), or the
//             command line's default scheme
//   format    may choose otherwise (GGUF: llama-quantize's per-tensor types)
//             or find the shape unstorable: the module stays in full precision
//   checked   a group size that does not divide the input width, static groups
//             without groups, or a GPTQ module under `rtn` is an InputError
//             naming the module and who asked for it
// lm_head is quantized only when a recipe rule names it or the format always
// stores it quantized (GGUF's output.weight); it is the run's last step.
#include <optional>
#include <string>
#include <vector>

#include "gptq/calib/quantize_pipeline.h"
#include "gptq/model/config.h"
#include "gptq/pack/format.h"
#include "gptq/solver/scheme.h"

namespace gptq::calib {

struct QuantizePlan {
  solver::SchemeResolver schemes;          // every linear's scheme (nullopt: kept as it is)
  std::optional<solver::Scheme> lm_head;   // nullopt: lm_head stays as it is
  bool calibrated = false;                 // some module is solved with GPTQ: calibration needed

  // Steps of the run (calib/work_dir.h): one per decoder block, then lm_head when quantized.
  int n_steps(const model::ModelConfig& config) const { return config.n_layers + (lm_head ? 1 : 0); }
  // Whether lm_head's step needs the last block's output (a GPTQ solve of lm_head).
  bool lm_head_needs_input() const { return lm_head && lm_head->method == solver::SolveMethod::kGptq; }
};

// The plan of `options` for `config` stored in `format`. InputError as above.
QuantizePlan plan_quantize(const QuantizeOptions& options, const model::ModelConfig& config,
                           const pack::OutputFormat& format);

// --dry-run: one row per module on stdout (module, bits, group, sym, act-order, method, grid, decided by).
void print_plan(const model::ModelConfig& config, const QuantizePlan& plan);

// Every module's resolved scheme as one hash ("fnv1a64:..."), the fingerprint's "module schemes".
std::string plan_digest(const model::ModelConfig& config, const QuantizePlan& plan);

// The output projection's module name ("lm_head").
std::string lm_head_module(const model::ModelConfig& config);

}  // namespace gptq::calib
