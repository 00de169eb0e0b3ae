#include "gptq/calib/recipe.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gptq/core/error.h"

namespace gptq::calib {
namespace {

const std::vector<std::string> kModules = {
    "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.o_proj", "model.layers.0.mlp.gate_proj",
    "model.layers.0.mlp.down_proj",    "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj",
    "model.layers.1.mlp.experts.3.up_proj"};

solver::Scheme scheme(int bits, int group_size, bool sym = true) {
  solver::Scheme s;
  s.quant.bits = bits;
  s.quant.group_size = group_size;
  s.quant.sym = sym;
  return s;
}

Recipe parse(const nlohmann::json& json) { return parse_recipe(json.dump(), "r.json"); }

template <typename ErrorType>
std::string error_of(const std::function<void()>& run) {
  try {
    run();
  } catch (const ErrorType& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(Recipe, GlobsCrossDotsAndRegexesMatchWholeNames) {
  EXPECT_TRUE(recipe_matches("*.self_attn.*", "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(recipe_matches("*.self_attn.*", "model.layers.0.mlp.up_proj"));
  EXPECT_TRUE(recipe_matches("model.layers.?.mlp.*", "model.layers.1.mlp.down_proj"));
  EXPECT_FALSE(recipe_matches("model.layers.?.mlp.*", "model.layers.10.mlp.down_proj"));
  EXPECT_TRUE(recipe_matches("model.layers.[01].mlp.down_proj", "model.layers.1.mlp.down_proj"));
  EXPECT_FALSE(recipe_matches("model.layers.[!01].mlp.down_proj", "model.layers.1.mlp.down_proj"));
  EXPECT_FALSE(recipe_matches("model.layers.0", "model.layers.0.mlp.down_proj"));  // whole name
  EXPECT_FALSE(recipe_matches("model.layers.0.mlp.down_proj", "modelXlayers.0.mlp.down_proj"));  // dots literal
  EXPECT_TRUE(recipe_matches("re:model\\.layers\\.[0-9]+\\.mlp\\..*", "model.layers.12.mlp.up_proj"));
  EXPECT_FALSE(recipe_matches("re:mlp", "model.layers.12.mlp.up_proj"));  // full match, not search
  EXPECT_NE(error_of<InputError>([] { recipe_matches("re:(", "x"); }).find("'re:('"), std::string::npos);
}

TEST(Recipe, LaterRulesOverrideKeyByKeyAndSkipCanBeUndone) {
  const Recipe recipe = parse({{"rules",
                                {{{"match", "*.self_attn.*"}, {"bits", 8}, {"group_size", 64}},
                                 {{"match", "model.layers.1.*"}, {"group_size", 32}},
                                 {{"match", "*.mlp.*"}, {"skip", true}},
                                 {{"match", "*.experts.*"}, {"bits", 2}}}}});
  const solver::Scheme base = scheme(4, 128);
  const solver::SchemeResolver resolver = resolve_recipe(recipe, base, kModules);
  EXPECT_EQ(resolver.resolve("model.layers.0.self_attn.q_proj"), scheme(8, 64));
  EXPECT_EQ(resolver.resolve("model.layers.1.self_attn.q_proj"), scheme(8, 32));  // bits from rule 0, group from 1
  EXPECT_FALSE(resolver.resolve("model.layers.0.mlp.down_proj").has_value());
  EXPECT_FALSE(resolver.resolve("model.layers.1.mlp.down_proj").has_value());
  // Skipped by rule 2, quantized again by rule 3 (group 32 from rule 1 kept).
  EXPECT_EQ(resolver.resolve("model.layers.1.mlp.experts.3.up_proj"), scheme(2, 32));
  // One exact rule per module that differs from the default, naming its rules.
  EXPECT_EQ(resolver.rules().size(), kModules.size());
  EXPECT_NE(resolver.rules()[0].reason.find("rules[0] (match '*.self_attn.*')"), std::string::npos);
}

TEST(Recipe, BadRecipesNameTheRuleAndTheKey) {
  auto input_error = [](const nlohmann::json& json) {
    return error_of<InputError>([&] { parse(json); });
  };
  EXPECT_NE(input_error({{"rules", {{{"match", "*"}, {"bitz", 4}}}}}).find("rules[0] (match '*'): unknown key 'bitz'"),
            std::string::npos);
  EXPECT_NE(input_error({{"default", {{"bits", 5}}}}).find("default: key 'bits' must be one of 2, 3, 4, 8"),
            std::string::npos);
  EXPECT_NE(input_error({{"rules", {{{"match", "*"}, {"group_size", 0}}}}}).find("'group_size'"), std::string::npos);
  EXPECT_NE(input_error({{"rules", {{{"bits", 4}}}}}).find("rules[0]: needs a non-empty string 'match'"),
            std::string::npos);
  EXPECT_NE(input_error({{"default", {{"damp_percent", 2.0}}}}).find("'damp_percent'"), std::string::npos);
  EXPECT_NE(input_error({{"default", {{"method", "awq"}}}}).find("'method'"), std::string::npos);
  EXPECT_NE(input_error({{"schemes", {}}}).find("unknown top-level key 'schemes'"), std::string::npos);
  EXPECT_NE(error_of<InputError>([] { parse_recipe("{", "r.json"); }).find("r.json: not valid JSON"),
            std::string::npos);

  const solver::Scheme base = scheme(4, 128);
  const Recipe unmatched = parse({{"rules", {{{"match", "*.attn.*"}, {"bits", 8}}}}});
  EXPECT_NE(error_of<InputError>([&] { resolve_recipe(unmatched, base, kModules); })
                .find("rules[0] (match '*.attn.*') matches no quantizable module"),
            std::string::npos);
}

TEST(Recipe, SolverKeysApplyPerRule) {
  const Recipe recipe = parse({{"rules",
                                {{{"match", "*.mlp.*"}, {"desc_act", true}, {"damp_percent", 0.05}},
                                 {{"match", "*.down_proj"}, {"method", "rtn"}, {"static_groups", true}}}}});
  const solver::SchemeResolver resolver = resolve_recipe(recipe, scheme(4, 128), kModules);
  solver::Scheme mlp = scheme(4, 128);
  mlp.desc_act = true;
  mlp.damp_percent = 0.05;
  EXPECT_EQ(resolver.resolve("model.layers.0.mlp.gate_proj"), mlp);
  solver::Scheme down = mlp;
  down.method = solver::SolveMethod::kRtn;
  down.static_groups = true;
  EXPECT_EQ(resolver.resolve("model.layers.0.mlp.down_proj"), down);
  EXPECT_FALSE(resolver.resolve("model.layers.0.mlp.down_proj")->act_order());
  EXPECT_EQ(resolver.resolve("model.layers.0.self_attn.q_proj"), scheme(4, 128));
}

// lm_head: only rules that spell it out apply; a catch-all leaves it alone.
TEST(Recipe, LmHeadOnlyByARuleNamingIt) {
  const solver::Scheme base = scheme(4, 128);
  const Recipe catch_all = parse({{"rules", {{{"match", "*"}, {"bits", 8}}}}});
  EXPECT_EQ(resolve_recipe(catch_all, base, kModules, "lm_head").deciding_rule("lm_head"), nullptr);
  const Recipe named = parse({{"rules", {{{"match", "*"}, {"bits", 8}}, {{"match", "lm_head"}, {"group_size", 64}}}}});
  const solver::SchemeResolver resolver = resolve_recipe(named, base, kModules, "lm_head");
  ASSERT_NE(resolver.deciding_rule("lm_head"), nullptr);
  EXPECT_EQ(resolver.resolve("lm_head"), scheme(4, 64));  // the catch-all's bits do not reach it
  // Named with the default scheme: still a rule, so the pipeline knows it was asked for.
  const Recipe plain = parse({{"rules", {{{"match", "lm_head"}, {"bits", 4}}}}});
  ASSERT_NE(resolve_recipe(plain, base, kModules, "lm_head").deciding_rule("lm_head"), nullptr);
  EXPECT_EQ(resolve_recipe(plain, base, kModules, "lm_head").resolve("lm_head"), base);
  // Without an lm_head to offer, such a rule matches nothing.
  EXPECT_NE(error_of<InputError>([&] { resolve_recipe(plain, base, kModules); }).find("matches no quantizable"),
            std::string::npos);
}

TEST(Recipe, DefaultsAreReadForTheCommandLineToMerge) {
  const Recipe recipe = parse({{"description", "test"},
                               {"default", {{"bits", 8}, {"group_size", 64}, {"sym", false}, {"desc_act", true},
                                            {"damp_percent", 0.05}, {"method", "rtn"}}}});
  EXPECT_EQ(recipe.defaults.bits, 8);
  EXPECT_EQ(recipe.defaults.group_size, 64);
  EXPECT_EQ(recipe.defaults.sym, false);
  EXPECT_EQ(recipe.defaults.desc_act, true);
  EXPECT_EQ(recipe.defaults.damp_percent, 0.05);
  EXPECT_EQ(recipe.defaults.method, "rtn");
  EXPECT_FALSE(recipe.defaults.mse.has_value());
  EXPECT_TRUE(recipe.rules.empty());
}

}  // namespace
}  // namespace gptq::calib
