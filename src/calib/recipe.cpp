// Recipe files: parse and check, match module names, resolve per module.
#include "gptq/calib/recipe.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "gptq/core/error.h"

namespace gptq::calib {
namespace {

using nlohmann::json;

const std::set<std::string> kSchemeKeys = {"bits", "group_size", "sym", "mse", "desc_act",
                                           "static_groups", "damp_percent", "method"};

// Reads the scheme keys of `object`; `where` names it in errors
// ("recipe.json: rules[1] (match '...')").
SchemeKeys parse_keys(const json& object, const std::string& where, const std::set<std::string>& extra) {
  GPTQ_CHECK(object.is_object(), where, ": must be a JSON object, got ", object.dump());
  for (const auto& [key, value] : object.items()) {
    GPTQ_CHECK(kSchemeKeys.count(key) || extra.count(key), where, ": unknown key '", key,
               "' (scheme keys: bits, group_size, sym, desc_act, static_groups, damp_percent, mse, method",
               extra.empty() ? "" : "; rules also take match and skip", ")");
  }
  auto boolean = [&](const char* key) -> std::optional<bool> {
    if (!object.contains(key)) return std::nullopt;
    GPTQ_CHECK(object.at(key).is_boolean(), where, ": key '", key, "' must be true or false, got ",
               object.at(key).dump());
    return object.at(key).get<bool>();
  };
  SchemeKeys keys;
  if (object.contains("bits")) {
    const json& bits = object.at("bits");
    GPTQ_CHECK(bits.is_number_integer() && (bits == 2 || bits == 3 || bits == 4 || bits == 8), where,
               ": key 'bits' must be one of 2, 3, 4, 8, got ", bits.dump());
    keys.bits = bits.get<int>();
  }
  if (object.contains("group_size")) {
    const json& group = object.at("group_size");
    GPTQ_CHECK(group.is_number_integer() && (group == -1 || group.get<int64_t>() > 0), where,
               ": key 'group_size' must be -1 (one group per row) or a positive integer, got ", group.dump());
    keys.group_size = group.get<int>();
  }
  keys.sym = boolean("sym");
  keys.mse = boolean("mse");
  keys.desc_act = boolean("desc_act");
  keys.static_groups = boolean("static_groups");
  if (object.contains("damp_percent")) {
    const json& damp = object.at("damp_percent");
    GPTQ_CHECK(damp.is_number() && damp.get<double>() > 0 && damp.get<double>() < 1, where,
               ": key 'damp_percent' must be a number in (0, 1), got ", damp.dump());
    keys.damp_percent = damp.get<double>();
  }
  if (object.contains("method")) {
    const json& method = object.at("method");
    GPTQ_CHECK(method == "gptq" || method == "rtn", where, ": key 'method' must be \"gptq\" or \"rtn\", got ",
               method.dump());
    keys.method = method.get<std::string>();
  }
  return keys;
}

// The glob as a whole-name regex: * and ? cross dots, [...] stays a class.
std::string glob_to_regex(const std::string& glob) {
  std::string out;
  for (size_t idx = 0; idx < glob.size(); ++idx) {
    const char c = glob[idx];
    if (c == '*') {
      out += ".*";
    } else if (c == '?') {
      out += '.';
    } else if (c == '[') {
      const size_t close = glob.find(']', idx + 1);
      if (close == std::string::npos) {
        out += "\\[";
        continue;
      }
      std::string body = glob.substr(idx + 1, close - idx - 1);
      if (!body.empty() && body[0] == '!') body[0] = '^';  // fnmatch's negation
      out += "[" + body + "]";
      idx = close;
    } else {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') out += '\\';
      out += c;
    }
  }
  return out;
}

// The whole-name regex of a rule's match; InputError naming a malformed one.
std::regex compile_match(const std::string& match) {
  const bool is_regex = match.starts_with("re:");
  try {
    return std::regex(is_regex ? match.substr(3) : glob_to_regex(match), std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw InputError("recipe match '" + match + "' is not a valid regex: " + e.what());
  }
}

}  // namespace

Recipe parse_recipe(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    throw InputError(source + ": not valid JSON: " + e.what());
  }
  GPTQ_CHECK(root.is_object(), source, ": a recipe is a JSON object with \"default\" and \"rules\"");
  for (const auto& [key, value] : root.items()) {
    GPTQ_CHECK(key == "default" || key == "rules" || key == "description", source, ": unknown top-level key '",
               key, "' (a recipe has \"description\", \"default\" and \"rules\")");
  }
  GPTQ_CHECK(!root.contains("description") || root.at("description").is_string(), source,
             ": key 'description' must be a string");
  Recipe recipe;
  recipe.source = source;
  if (root.contains("default")) recipe.defaults = parse_keys(root.at("default"), source + ": default", {});
  if (!root.contains("rules")) return recipe;
  const json& rules = root.at("rules");
  GPTQ_CHECK(rules.is_array(), source, ": key 'rules' must be a list of rule objects");
  for (size_t idx = 0; idx < rules.size(); ++idx) {
    const json& rule = rules[idx];
    const std::string where = source + ": rules[" + std::to_string(idx) + "]";
    GPTQ_CHECK(rule.is_object() && rule.contains("match") && rule.at("match").is_string() &&
                   !rule.at("match").get<std::string>().empty(),
               where, ": needs a non-empty string 'match'");
    RecipeRule parsed;
    parsed.match = rule.at("match").get<std::string>();
    const std::string named = where + " (match '" + parsed.match + "')";
    parsed.keys = parse_keys(rule, named, {"match", "skip"});
    if (rule.contains("skip")) {
      GPTQ_CHECK(rule.at("skip").is_boolean(), named, ": key 'skip' must be true or false");
      parsed.skip = rule.at("skip").get<bool>();
    }
    compile_match(parsed.match);  // a malformed regex fails here, named
    recipe.rules.push_back(std::move(parsed));
  }
  return recipe;
}

Recipe load_recipe(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in.good(), "cannot read recipe '", path.string(), "': ",
             std::filesystem::exists(path) ? "permission denied" : "no such file");
  std::stringstream text;
  text << in.rdbuf();
  return parse_recipe(text.str(), path.string());
}

bool recipe_matches(const std::string& match, const std::string& module_name) {
  return std::regex_match(module_name, compile_match(match));
}

std::string rule_label(const Recipe& recipe, size_t rule_index) {
  return "rules[" + std::to_string(rule_index) + "] (match '" + recipe.rules[rule_index].match + "')";
}

solver::SchemeResolver resolve_recipe(const Recipe& recipe, const solver::Scheme& default_scheme,
                                      const std::vector<std::string>& modules, const std::string& lm_head) {
  // Rules compiled once; every module walks all of them in order.
  std::vector<std::regex> compiled;
  for (const RecipeRule& rule : recipe.rules) compiled.push_back(compile_match(rule.match));
  std::vector<bool> used(recipe.rules.size(), false);
  solver::SchemeResolver resolver(default_scheme);
  auto resolve_one = [&](const std::string& module, bool named_only) {
    solver::Scheme scheme = default_scheme;
    bool skipped = false;
    std::string decided_by;
    for (size_t idx = 0; idx < recipe.rules.size(); ++idx) {
      const RecipeRule& rule = recipe.rules[idx];
      if (named_only && rule.match.find(module) == std::string::npos) continue;
      if (!std::regex_match(module, compiled[idx])) continue;
      used[idx] = true;
      const SchemeKeys& keys = rule.keys;
      if (rule.skip) skipped = true;
      const bool sets_scheme = keys.bits || keys.group_size || keys.sym || keys.mse || keys.desc_act ||
                               keys.static_groups || keys.damp_percent || keys.method;
      if (sets_scheme && !rule.skip) skipped = false;  // a later rule quantizes it again
      if (keys.bits) scheme.quant.bits = *keys.bits;
      if (keys.group_size) scheme.quant.group_size = *keys.group_size;
      if (keys.sym) scheme.quant.sym = *keys.sym;
      if (keys.mse) scheme.quant.mse = *keys.mse;
      if (keys.desc_act) scheme.desc_act = *keys.desc_act;
      if (keys.static_groups) scheme.static_groups = *keys.static_groups;
      if (keys.damp_percent) scheme.damp_percent = *keys.damp_percent;
      if (keys.method) scheme.method = *keys.method == "rtn" ? solver::SolveMethod::kRtn : solver::SolveMethod::kGptq;
      decided_by += (decided_by.empty() ? "recipe " : ", ") + rule_label(recipe, idx);
    }
    if (skipped) {
      resolver.add_rule(solver::SchemeResolver::exact(module), std::nullopt, decided_by);
    } else if (!(scheme == default_scheme) || (named_only && !decided_by.empty())) {
      resolver.add_rule(solver::SchemeResolver::exact(module), scheme, decided_by);
    }
  };
  for (const std::string& module : modules) resolve_one(module, false);
  // lm_head only by rules that spell it out: a catch-all "*" leaves it alone.
  if (!lm_head.empty()) resolve_one(lm_head, true);
  for (size_t idx = 0; idx < recipe.rules.size(); ++idx) {
    GPTQ_CHECK(used[idx], recipe.source, ": ", rule_label(recipe, idx),
               " matches no quantizable module of this model (names look like '",
               modules.empty() ? std::string("?") : modules.front(), "')");
  }
  return resolver;
}

}  // namespace gptq::calib
