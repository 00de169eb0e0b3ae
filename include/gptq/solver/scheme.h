#pragma once
// Scheme and SchemeResolver: the one answer to "what does module X become?".
//
// A Scheme is how one linear is quantized: its grid settings (bits,
// group_size, sym, mse; quantizer.h). resolve(module_name) gives the scheme
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
// module name extends another one, so the prefix match is exact).
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "gptq/solver/quantizer.h"

namespace gptq::solver {

struct Scheme {
  QuantConfig quant;
  bool operator==(const Scheme& other) const {
    return quant.bits == other.quant.bits && quant.group_size == other.quant.group_size &&
           quant.sym == other.quant.sym && quant.mse == other.quant.mse &&
           quant.min_zero == other.quant.min_zero;
  }
};

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
  const Scheme& default_scheme() const { return default_; }
  const std::vector<Rule>& rules() const { return rules_; }

  // A regex matching exactly `name`.
  static std::string exact(const std::string& name);

 private:
  Scheme default_;
  std::vector<Rule> rules_;
  std::vector<std::regex> compiled_;
};

}  // namespace gptq::solver
