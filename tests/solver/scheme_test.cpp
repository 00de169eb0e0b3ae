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

TEST(SchemeResolver, BadPatternsAndSchemesAreInputErrors) {
  SchemeResolver schemes(bits(4));
  EXPECT_THROW(schemes.add_rule("model.(layers", bits(8)), InputError);
  EXPECT_THROW(schemes.add_rule("x", bits(5)), InputError);
  EXPECT_THROW(SchemeResolver(bits(7)), InputError);
}

}  // namespace
}  // namespace gptq::solver
