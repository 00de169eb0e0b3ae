// The output formats: what they can store, what they ask of the solver, the
// tensors and the quantization_config they write.
#include "gptq/pack/format.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "gptq/core/error.h"
#include "gptq/pack/gptq_pack.h"

namespace gptq::pack {
namespace {

solver::Scheme scheme(int bits, bool sym = true, int group_size = 128) {
  solver::Scheme s;
  s.quant.bits = bits;
  s.quant.sym = sym;
  s.quant.group_size = group_size;
  return s;
}

SolvedLinear solved_with_zero(int64_t zero) {
  SolvedLinear linear;
  linear.codes = at::randint(0, 16, {8, 32}, at::kByte);
  linear.zeros = at::full({1, 8}, zero, at::kInt);
  linear.scales = at::rand({1, 8}) + 0.1;
  linear.g_idx = sequential_g_idx(32, -1);
  return linear;
}

TEST(OutputFormat, NamesAndUnknownFormat) {
  EXPECT_EQ(make_output_format("gptq")->name(), "gptq");
  EXPECT_EQ(make_output_format("gptq_v2")->name(), "gptq_v2");
  EXPECT_EQ(output_format_names(), (std::vector<std::string>{"gptq", "gptq_v2"}));
  EXPECT_THROW(make_output_format("awq"), InputError);
}

TEST(OutputFormat, WhatGptqCanStore) {
  const auto v1 = make_output_format("gptq");
  EXPECT_FALSE(v1->cannot_store(32, 64, scheme(4)));
  const auto why = v1->cannot_store(32, 172, scheme(4));  // 172 codes are not whole 32-bit words
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("4 bits"), std::string::npos) << *why;
  EXPECT_TRUE(v1->cannot_store(48, 64, scheme(3)));
  EXPECT_FALSE(v1->cannot_store(64, 96, scheme(3)));
  EXPECT_FALSE(v1->cannot_store(4, 4, scheme(8)));
}

TEST(OutputFormat, V1FloorsAsymmetricZerosV2DoesNot) {
  const auto v1 = make_output_format("gptq");
  const auto v2 = make_output_format("gptq_v2");
  EXPECT_EQ(v1->solver_scheme(scheme(4, false)).quant.min_zero, 1);
  EXPECT_EQ(v1->solver_scheme(scheme(4, true)).quant.min_zero, 0);
  EXPECT_EQ(v2->solver_scheme(scheme(4, false)).quant.min_zero, 0);
}

TEST(OutputFormat, PackedTensorsRoundTripInTheirOwnEncoding) {
  for (const char* name : {"gptq", "gptq_v2"}) {
    SCOPED_TRACE(name);
    const auto format = make_output_format(name);
    const SolvedLinear linear = solved_with_zero(0);
    const auto tensors = format->pack("m.up", linear, scheme(4, false));
    ASSERT_EQ(tensors.size(), 4u);
    EXPECT_EQ(tensors[0].first, "m.up.qweight");
    EXPECT_EQ(tensors[1].first, "m.up.qzeros");
    GptqTensors packed{tensors[0].second, tensors[1].second, tensors[2].second, tensors[3].second};
    const ZeroEncoding encoding =
        std::string(name) == "gptq" ? ZeroEncoding::kMinusOne : ZeroEncoding::kExact;
    const UnpackedGptq back = unpack_gptq(packed, 4, encoding);
    EXPECT_TRUE(back.codes.equal(linear.codes));
    EXPECT_TRUE(back.zeros.equal(linear.zeros));
    if (encoding == ZeroEncoding::kExact) {
      EXPECT_EQ(packed.qzeros.abs().max().item<int64_t>(), 0);  // zeros stored as they are
    }
  }
}

TEST(OutputFormat, QuantizationConfigRecordsDefaultsAndExceptions) {
  solver::SchemeResolver schemes(scheme(4, true, 32));
  schemes.keep_full_precision("model.layers.0.mlp.down_proj", "not packable");
  schemes.add_rule(R"(model\.layers\.1\.)", scheme(8, true, 64));
  RunSettings settings;
  settings.desc_act = true;
  const nlohmann::json config = make_output_format("gptq_v2")->quantization_config(schemes, settings);
  EXPECT_EQ(config["checkpoint_format"], "gptq_v2");
  EXPECT_EQ(config["bits"], 4);
  EXPECT_EQ(config["group_size"], 32);
  EXPECT_EQ(config["desc_act"], true);
  EXPECT_TRUE(config["dynamic"].contains("-:model\\.layers\\.0\\.mlp\\.down_proj"));
  EXPECT_EQ(config["dynamic"]["+:model\\.layers\\.1\\."]["bits"], 8);
  EXPECT_EQ(config["dynamic"]["+:model\\.layers\\.1\\."]["group_size"], 64);
  EXPECT_FALSE(make_output_format("gptq")
                   ->quantization_config(solver::SchemeResolver(scheme(4)), settings)
                   .contains("dynamic"));
}

}  // namespace
}  // namespace gptq::pack
