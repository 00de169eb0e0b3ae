#pragma once
// Scheme and SchemeResolver: the one answer to "what does module X become?".
//
// A Scheme is how one linear is quantized: its grid settings (bits,
// group_size, sym, mse; quantizer.h) and how the solver fits it (GPTQ with
// act-order, static groups and damping, or round-to-nearest). resolve(module_name) gives the scheme
// of a linear by its full name ("model.layers.3.mlp.down_proj"), or nullopt
// when it stays in full precision. The pipeline asks it before any work (to
// validate every shape), the solver call and the packer use its answer, the
// checkpoint writer records the exceptions in quantization_config and the
// GPTQ checkpoint reader rebuilds a resolver from that config, so writer and
// reader can never disagree about a module.
//
// Rules are tried in the order added; the first whose pattern matches wins,
// and no match means the default scheme. Patterns are ECMAScript regexes
// matched at the start of the name, as GPTQModel and vLLM read the "dynamic"
// keys of quantization_config (Python re.match); exact() escapes a name (no
// module name extends another one, so the prefix match is exact). Patterns
// that are escaped literals (what exact() writes, one per module of a mixed
// recipe: tens of thousands for a large MoE) are looked up by prefix in a
// hash map, so resolving costs O(name length + regex rules), not O(rules).
#include <optional>
#include <regex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gptq/solver/gptq.h"
#include "gptq/solver/quantizer.h"

namespace gptq::solver {

enum class SolveMethod { kGptq, kRtn };

struct Scheme {
  QuantConfig quant;
  // How GPTQ solves it; RTN ignores all three.
  bool desc_act = false;
  bool static_groups = false;
  double damp_percent = 0.01;
  SolveMethod method = SolveMethod::kGptq;
  // The value grid: empty for GPTQ's min-max integer grid (quant); otherwise
  // the name of a grid the output format supplies (OutputFormat::grid; GGUF:
  // the ggml type, "q4_K"), whose codes quant.bits and group_size describe.
  std::string grid;
  bool operator==(const Scheme& other) const = default;
  // Act-order is only real for a GPTQ solve (RTN keeps the natural order).
  bool act_order() const { return desc_act && method == SolveMethod::kGptq; }
};

// The scheme that `config`'s settings describe (grid, act-order, static
// groups, damping) for `method`.
Scheme scheme_of(const GptqConfig& config, SolveMethod method = SolveMethod::kGptq);
// `base` (block size, retries, grid) with `scheme`'s grid and solve settings.
GptqConfig solve_config(const GptqConfig& base, const Scheme& scheme);
// "gptq" or "rtn".
const char* method_name(SolveMethod method);
// InputError unless the scheme can run: quant as validate(QuantConfig) for
// the min-max grid; a named grid checks only the group size (it owns its codes).
void validate(const Scheme& scheme);

class SchemeResolver {
 public:
  struct Rule {
    std::string pattern;          // as written to / read from quantization_config
    std::optional<Scheme> scheme; // nullopt: full precision
    std::string reason;           // why (reports and logs), may be empty
  };

  explicit SchemeResolver(Scheme default_scheme);

  // InputError naming `pattern` when it is not a valid regex.
  void add_rule(std::string pattern, std::optional<Scheme> scheme, std::string reason = "");
  // A rule for exactly `module_name` (escaped), full precision.
  void keep_full_precision(const std::string& module_name, std::string reason);

  std::optional<Scheme> resolve(const std::string& module_name) const;
  // The rule that decides `module_name`, or null when the default does.
  const Rule* deciding_rule(const std::string& module_name) const;
  const Scheme& default_scheme() const { return default_; }
  const std::vector<Rule>& rules() const { return rules_; }

  // A regex matching exactly `name`.
  static std::string exact(const std::string& name);
  // The name `pattern` matches literally (as a prefix) when it is one: only
  // word characters and backslash-escaped punctuation.
  static std::optional<std::string> literal(const std::string& pattern);

 private:
  Scheme default_;
  std::vector<Rule> rules_;
  std::unordered_map<std::string, size_t> literal_rules_;  // literal prefix -> first rule index
  std::vector<std::pair<size_t, std::regex>> regex_rules_;  // (rule index, compiled), in order
};

}  // namespace gptq::solver
