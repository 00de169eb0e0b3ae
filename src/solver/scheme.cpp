#include "gptq/solver/scheme.h"

#include <cctype>

#include "gptq/core/error.h"

namespace gptq::solver {

SchemeResolver::SchemeResolver(Scheme default_scheme) : default_(default_scheme) {
  validate(default_.quant);
}

void SchemeResolver::add_rule(std::string pattern, std::optional<Scheme> scheme, std::string reason) {
  if (scheme) validate(scheme->quant);
  try {
    compiled_.emplace_back(pattern, std::regex::ECMAScript | std::regex::optimize);
  } catch (const std::regex_error& e) {
    throw InputError("module pattern '" + pattern + "' is not a valid regex: " + e.what());
  }
  rules_.push_back({std::move(pattern), scheme, std::move(reason)});
}

void SchemeResolver::keep_full_precision(const std::string& module_name, std::string reason) {
  add_rule(exact(module_name), std::nullopt, std::move(reason));
}

std::optional<Scheme> SchemeResolver::resolve(const std::string& module_name) const {
  for (size_t rule_idx = 0; rule_idx < rules_.size(); ++rule_idx) {
    if (std::regex_search(module_name, compiled_[rule_idx], std::regex_constants::match_continuous)) {
      return rules_[rule_idx].scheme;
    }
  }
  return default_;
}

std::string SchemeResolver::exact(const std::string& name) {
  std::string escaped;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') escaped += '\\';
    escaped += c;
  }
  return escaped;
}

}  // namespace gptq::solver
