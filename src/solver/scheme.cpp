#include "gptq/solver/scheme.h"

#include <cctype>

#include "gptq/core/error.h"

namespace gptq::solver {

Scheme scheme_of(const GptqConfig& config, SolveMethod method) {
  Scheme scheme;
  scheme.quant = config.quant;
  scheme.desc_act = config.desc_act;
  scheme.static_groups = config.static_groups;
  scheme.damp_percent = config.damp_percent;
  scheme.method = method;
  return scheme;
}

GptqConfig solve_config(const GptqConfig& base, const Scheme& scheme) {
  GptqConfig config = base;
  config.quant = scheme.quant;
  config.desc_act = scheme.desc_act;
  config.static_groups = scheme.static_groups;
  config.damp_percent = scheme.damp_percent;
  return config;
}

const char* method_name(SolveMethod method) { return method == SolveMethod::kGptq ? "gptq" : "rtn"; }

void validate(const Scheme& scheme) {
  if (scheme.grid.empty()) {
    validate(scheme.quant);
    return;
  }
  GPTQ_CHECK(scheme.quant.group_size > 0, "grid '", scheme.grid, "' needs a positive group_size, got ",
             scheme.quant.group_size);
}

SchemeResolver::SchemeResolver(Scheme default_scheme) : default_(default_scheme) {
  validate(default_);
}

void SchemeResolver::add_rule(std::string pattern, std::optional<Scheme> scheme, std::string reason) {
  if (scheme) validate(*scheme);
  const size_t index = rules_.size();
  if (std::optional<std::string> prefix = literal(pattern)) {
    literal_rules_.try_emplace(*prefix, index);  // an earlier rule for the same prefix wins
  } else {
    try {
      regex_rules_.emplace_back(index, std::regex(pattern, std::regex::ECMAScript | std::regex::optimize));
    } catch (const std::regex_error& e) {
      throw InputError("module pattern '" + pattern + "' is not a valid regex: " + e.what());
    }
  }
  rules_.push_back({std::move(pattern), scheme, std::move(reason)});
}

void SchemeResolver::keep_full_precision(const std::string& module_name, std::string reason) {
  add_rule(exact(module_name), std::nullopt, std::move(reason));
}

const SchemeResolver::Rule* SchemeResolver::deciding_rule(const std::string& module_name) const {
  // The first literal rule that is a prefix of the name, then any earlier regex rule.
  size_t first = rules_.size();
  if (!literal_rules_.empty()) {
    for (size_t length = 1; length <= module_name.size(); ++length) {
      auto found = literal_rules_.find(module_name.substr(0, length));
      if (found != literal_rules_.end()) first = std::min(first, found->second);
    }
  }
  for (const auto& [index, compiled] : regex_rules_) {
    if (index >= first) break;
    if (std::regex_search(module_name, compiled, std::regex_constants::match_continuous)) {
      first = index;
      break;
    }
  }
  return first < rules_.size() ? &rules_[first] : nullptr;
}

std::optional<Scheme> SchemeResolver::resolve(const std::string& module_name) const {
  const Rule* rule = deciding_rule(module_name);
  return rule ? rule->scheme : std::optional<Scheme>(default_);
}

std::string SchemeResolver::exact(const std::string& name) {
  std::string escaped;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') escaped += '\\';
    escaped += c;
  }
  return escaped;
}

std::optional<std::string> SchemeResolver::literal(const std::string& pattern) {
  std::string text;
  for (size_t idx = 0; idx < pattern.size(); ++idx) {
    const unsigned char c = static_cast<unsigned char>(pattern[idx]);
    if (std::isalnum(c) || c == '_') {
      text += pattern[idx];
    } else if (c == '\\' && idx + 1 < pattern.size() &&
               !std::isalnum(static_cast<unsigned char>(pattern[idx + 1])) && pattern[idx + 1] != '_') {
      text += pattern[++idx];  // \. is a dot; \d, \w, \b are classes, not literals
    } else {
      return std::nullopt;
    }
  }
  if (text.empty()) return std::nullopt;
  return text;
}

}  // namespace gptq::solver
