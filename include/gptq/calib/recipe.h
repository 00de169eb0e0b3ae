#pragma once
// Recipes (--recipe FILE.json): one JSON file decides each module's scheme.
//
//   {"description": "one line: what the recipe is for" (optional),
//    "default": {"bits": 4, "group_size": 128, "sym": true, "desc_act": false},
//    "rules": [{"match": "*.self_attn.*", "bits": 8, "group_size": 64},
//              {"match": "re:model\\.layers\\.0\\.mlp\\..*", "bits": 3, "group_size": 32},
//              {"match": "model.layers.2.mlp.down_proj", "skip": true}]}
//
// `match` is an fnmatch glob on the module name without ".weight" (`*` and
// `?` cross dots, `[...]` a character class) or, after "re:", a regex that
// must match the whole name. Rules apply in file order and later ones
// override earlier ones key by key; "skip": true keeps the module in the
// checkpoint's precision (a later rule with scheme keys quantizes it again).
// Command-line scheme flags override "default".
//
// Every scheme key works per rule, including the solver's (desc_act,
// static_groups, damp_percent, method). lm_head is quantized only by a rule
// whose match spells out "lm_head" (a catch-all "*" leaves it alone).
//
// Every problem is an InputError naming the file, the rule and the key,
// raised before any work: unknown keys, mistyped or out-of-range values, a
// rule that matches no module of the model.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "gptq/solver/scheme.h"

namespace gptq::calib {

// The scheme keys one object of the recipe sets (absent: inherited).
struct SchemeKeys {
  std::optional<int> bits;
  std::optional<int> group_size;
  std::optional<bool> sym;
  std::optional<bool> mse;
  std::optional<bool> desc_act;
  std::optional<bool> static_groups;
  std::optional<double> damp_percent;
  std::optional<std::string> method;  // "gptq" | "rtn"
};

struct RecipeRule {
  std::string match;  // as written
  SchemeKeys keys;
  bool skip = false;
};

struct Recipe {
  std::string source;  // file name, for messages
  SchemeKeys defaults;
  std::vector<RecipeRule> rules;
};

// Parses and checks a recipe (keys, types, ranges); `source` names it in errors.
Recipe parse_recipe(const std::string& json_text, const std::string& source);
Recipe load_recipe(const std::filesystem::path& path);

// Whether `match` (glob, or "re:" regex) selects `module_name`, whole name.
// InputError naming `match` for a malformed regex.
bool recipe_matches(const std::string& match, const std::string& module_name);

// "rules[2] (match 'model.layers.2.mlp.down_proj')", for messages.
std::string rule_label(const Recipe& recipe, size_t rule_index);

// The resolver a recipe gives for `modules` (full names of every quantizable
// decoder linear) and the output projection `lm_head` (its name; empty: the
// model has none to offer), on top of `default_scheme` (the recipe's default
// with the command line's flags already applied): one exact-name rule per
// module whose scheme differs from the default, labelled with the rules that
// decided it, and one for lm_head whenever a rule spelling it out matched
// (no rule: lm_head stays in full precision). InputError for a rule
// matching none of them.
solver::SchemeResolver resolve_recipe(const Recipe& recipe, const solver::Scheme& default_scheme,
                                      const std::vector<std::string>& modules, const std::string& lm_head = "");

}  // namespace gptq::calib
