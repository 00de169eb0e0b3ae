#include "gptq/solver/scheme.h"

#include <gtest/gtest.h>

#include "gptq/core/error.h"

namespace gptq::solver {
namespace {

Scheme bits(int n) {
  Scheme scheme;
  scheme.quant.bits = n;
  return scheme;
}

TEST(SchemeResolver, DefaultWhenNoRuleMatches) {
  SchemeResolver schemes(bits(4));
  EXPECT_EQ(schemes.resolve("model.layers.0.self_attn.q_proj"), bits(4));
  EXPECT_TRUE(schemes.rules().empty());
}

TEST(SchemeResolver, FirstMatchingRuleWinsAndMatchesFromTheStart) {
  SchemeResolver schemes(bits(4));
  schemes.keep_full_precision("model.layers.0.mlp.down_proj", "not packable");
  schemes.add_rule(R"(model\.layers\.\d+\.mlp\.)", bits(8));
  schemes.add_rule(R"(.*down_proj)", bits(2));
  EXPECT_FALSE(schemes.resolve("model.layers.0.mlp.down_proj").has_value());
  EXPECT_EQ(schemes.resolve("model.layers.1.mlp.down_proj"), bits(8));
  EXPECT_EQ(schemes.resolve("model.layers.7.mlp.gate_proj"), bits(8));
  EXPECT_EQ(schemes.resolve("model.layers.7.self_attn.o_proj"), bits(4));
  // re.match semantics: anchored at the start, not a search.
  EXPECT_EQ(schemes.resolve("prefix.model.layers.1.mlp.up_proj"), bits(4));
  EXPECT_EQ(schemes.rules().front().pattern, R"(model\.layers\.0\.mlp\.down_proj)");
  EXPECT_EQ(schemes.rules().front().reason, "not packable");
}

TEST(SchemeResolver, ExactEscapesEveryRegexCharacter) {
  SchemeResolver schemes(bits(4));
  schemes.keep_full_precision("a.b+c", "");
  EXPECT_FALSE(schemes.resolve("a.b+c").has_value());
  EXPECT_TRUE(schemes.resolve("aXb+c").has_value());
  EXPECT_TRUE(schemes.resolve("a.bbc").has_value());
}

// Literal patterns go through a prefix map; the answer must stay the one of
// re.match over the rules in order, whichever kind comes first.
TEST(SchemeResolver, LiteralAndRegexRulesKeepTheirOrder) {
  SchemeResolver schemes(bits(4));
  schemes.add_rule(R"(model\.layers\.\d+\.self_attn\.)", bits(8), "regex first");
  schemes.add_rule(SchemeResolver::exact("model.layers.0.self_attn.q_proj"), bits(2), "shadowed");
  schemes.add_rule(SchemeResolver::exact("model.layers.0.mlp.up_proj"), bits(3), "literal first");
  schemes.add_rule(R"(model\.layers\.0\.mlp\.)", bits(8), "regex after");
  schemes.add_rule(R"(model\.layers\.1\.)", std::nullopt, "literal prefix");
  EXPECT_EQ(schemes.resolve("model.layers.0.self_attn.q_proj"), bits(8));
  EXPECT_EQ(schemes.deciding_rule("model.layers.0.self_attn.q_proj")->reason, "regex first");
  EXPECT_EQ(schemes.resolve("model.layers.0.mlp.up_proj"), bits(3));
  EXPECT_EQ(schemes.resolve("model.layers.0.mlp.down_proj"), bits(8));
  // Prefix semantics for literals too (Python re.match): all of layer 1, not layer 10.
  EXPECT_FALSE(schemes.resolve("model.layers.1.mlp.up_proj").has_value());
  EXPECT_EQ(schemes.resolve("model.layers.10.mlp.up_proj"), bits(4));
  EXPECT_EQ(schemes.deciding_rule("model.layers.10.mlp.up_proj"), nullptr);
}

TEST(SchemeResolver, LiteralOnlyForWordCharactersAndEscapedPunctuation) {
  EXPECT_EQ(SchemeResolver::literal(R"(model\.layers\.0)"), "model.layers.0");
  EXPECT_EQ(SchemeResolver::literal("lm_head"), "lm_head");
  EXPECT_EQ(SchemeResolver::literal(R"(model\.layers\.\d)"), std::nullopt);
  EXPECT_EQ(SchemeResolver::literal("model.layers"), std::nullopt);
  EXPECT_EQ(SchemeResolver::literal(".*"), std::nullopt);
  EXPECT_EQ(SchemeResolver::literal(""), std::nullopt);
}

TEST(SchemeResolver, SchemesDifferInSolveSettingsToo) {
  Scheme act_order = bits(4);
  act_order.desc_act = true;
  EXPECT_FALSE(act_order == bits(4));
  EXPECT_TRUE(act_order.act_order());
  act_order.method = SolveMethod::kRtn;
  EXPECT_FALSE(act_order.act_order());
  GptqConfig config;
  config.quant.bits = 3;
  config.damp_percent = 0.1;
  config.static_groups = true;
  const Scheme scheme = scheme_of(config);
  const GptqConfig back = solve_config(GptqConfig{}, scheme);
  EXPECT_EQ(back.quant.bits, 3);
  EXPECT_EQ(back.damp_percent, 0.1);
  EXPECT_TRUE(back.static_groups);
}

TEST(SchemeResolver, BadPatternsAndSchemesAreInputErrors) {
  SchemeResolver schemes(bits(4));
  EXPECT_THROW(schemes.add_rule("model.(layers", bits(8)), InputError);
  EXPECT_THROW(schemes.add_rule("x", bits(5)), InputError);
  EXPECT_THROW(SchemeResolver(bits(7)), InputError);
}

}  // namespace
}  // namespace gptq::solver
