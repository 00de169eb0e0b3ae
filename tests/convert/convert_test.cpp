#include "gptq/convert/convert.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gptq/convert/pack_quantized.h"
#include "gptq/convert/v1_zeros.h"
#include "gptq/core/error.h"
#include "gptq/io/safetensors.h"
#include "gptq/pack/gptq_pack.h"

namespace gptq::convert {
namespace {

namespace fs = std::filesystem;

// A linear with fp16-exact scales; zeros in [min_zero, maxq].
pack::UnpackedGptq random_linear(int64_t out, int64_t in, int bits, int group_size, bool sym, int min_zero = 0) {
  const int maxq = (1 << bits) - 1;
  const int64_t n_groups = group_size == -1 ? 1 : in / group_size;
  pack::UnpackedGptq linear;
  linear.codes = at::randint(0, maxq + 1, {out, in}, at::kByte);
  linear.zeros = sym ? at::full({n_groups, out}, 1 << (bits - 1), at::kInt)
                     : at::randint(min_zero, maxq + 1, {n_groups, out}, at::kInt);
  linear.scales = (at::rand({n_groups, out}) * 0.01 + 1e-3).to(at::kHalf).to(at::kFloat);
  linear.g_idx = pack::sequential_g_idx(in, group_size).to(at::kInt);
  return linear;
}

solver::QuantConfig quant(int bits, int group_size, bool sym) {
  solver::QuantConfig config;
  config.bits = bits;
  config.group_size = group_size;
  config.sym = sym;
  return config;
}

void expect_same(const pack::UnpackedGptq& a, const pack::UnpackedGptq& b) {
  EXPECT_TRUE(a.codes.equal(b.codes));
  EXPECT_TRUE(a.zeros.to(at::kInt).equal(b.zeros.to(at::kInt)));
  EXPECT_TRUE(a.scales.equal(b.scales));
  EXPECT_TRUE(a.g_idx.to(at::kInt).equal(b.g_idx.to(at::kInt)));
}

at::Tensor dequantize(const pack::UnpackedGptq& linear) {
  const at::Tensor index = linear.g_idx.to(at::kLong);
  return (linear.codes.to(at::kFloat) - linear.zeros.index_select(0, index).t().to(at::kFloat)) *
         linear.scales.index_select(0, index).t();
}

TEST(PackQuantized, RoundTripsEveryWrittenScheme) {
  at::manual_seed(0);
  for (int bits : {2, 4, 8}) {
    for (int group_size : {32, -1}) {
      for (bool sym : {true, false}) {
        SCOPED_TRACE(testing::Message() << bits << "-bit g" << group_size << (sym ? " sym" : " asym"));
        const pack::UnpackedGptq linear = random_linear(64, 128, bits, group_size, sym);
        const PackQuantized packed = to_pack_quantized(linear, quant(bits, group_size, sym));
        EXPECT_EQ(packed.weight_packed.scalar_type(), at::kInt);
        EXPECT_EQ(packed.weight_packed.sizes(), at::IntArrayRef({64, 128 * bits / 32}));
        EXPECT_EQ(packed.weight_scale.scalar_type(), at::kHalf);
        EXPECT_EQ(packed.weight_scale.sizes(), at::IntArrayRef({64, group_size == -1 ? 1 : 4}));
        EXPECT_EQ(packed.weight_zero_point.defined(), !sym);
        EXPECT_TRUE(packed.weight_shape.equal(at::tensor({int64_t{64}, int64_t{128}}, at::kLong)));
        expect_same(from_pack_quantized(packed, quant(bits, group_size, sym)), linear);
      }
    }
  }
}

// The package's layout, written out by hand: 8 nibbles per int32 along the
// input dim (input 8w+j at bits 4j of word w), zero points packed along the
// output dim, i.e. GPTQ v2's qzeros transposed.
TEST(PackQuantized, FourBitLayoutIsNibblesAlongTheInputDim) {
  at::manual_seed(1);
  const pack::UnpackedGptq linear = random_linear(16, 64, 4, 32, /*sym=*/false);
  const PackQuantized packed = to_pack_quantized(linear, quant(4, 32, false));
  const auto codes = linear.codes.accessor<uint8_t, 2>();
  const auto words = packed.weight_packed.accessor<int32_t, 2>();
  for (int64_t row = 0; row < 16; ++row) {
    for (int64_t col = 0; col < 64; ++col) {
      const uint32_t word = static_cast<uint32_t>(words[row][col / 8]);
      ASSERT_EQ((word >> (4 * (col % 8))) & 0xF, codes[row][col]) << row << "," << col;
    }
  }
  const pack::GptqTensors v2 =
      pack::pack_gptq(linear.codes, linear.zeros, linear.scales, linear.g_idx, 4, pack::ZeroEncoding::kExact);
  EXPECT_TRUE(packed.weight_zero_point.equal(v2.qzeros.t().contiguous()));
  EXPECT_TRUE(packed.weight_scale.equal(linear.scales.t().to(at::kHalf)));
}

TEST(PackQuantized, RefusesWhatItCannotHold) {
  const pack::UnpackedGptq three_bit = random_linear(32, 64, 3, 32, false);
  EXPECT_NE(pack_quantized_refusal(three_bit, quant(3, 32, false)).value_or("").find("3-bit"), std::string::npos);
  EXPECT_THROW(to_pack_quantized(three_bit, quant(3, 32, false)), UnsupportedError);

  pack::UnpackedGptq act_order = random_linear(32, 64, 4, 32, false);
  act_order.g_idx = act_order.g_idx.flip(0).contiguous();
  EXPECT_NE(pack_quantized_refusal(act_order, quant(4, 32, false)).value_or("").find("act-order"), std::string::npos);

  pack::UnpackedGptq odd_sym = random_linear(32, 64, 4, 32, true);
  odd_sym.zeros[0][3] = 7;
  EXPECT_NE(pack_quantized_refusal(odd_sym, quant(4, 32, true)).value_or("").find("1 zero point"),
            std::string::npos);
  EXPECT_FALSE(pack_quantized_refusal(odd_sym, quant(4, 32, false)).has_value());
}

TEST(V1Zeros, ZeroZeroGroupsShiftExactlyWhenTheirCodesStopBelowMaxq) {
  at::manual_seed(2);
  pack::UnpackedGptq linear = random_linear(8, 64, 4, 32, false, /*min_zero=*/1);
  linear.zeros[1][5] = 0;
  linear.codes.select(0, 5).narrow(0, 32, 32).clamp_(0, 14);  // group 1 of row 5 never reaches 15
  EXPECT_EQ(count_zero_zeros(linear), 1);
  const V1Reencoding v1 = reencode_for_v1(linear, 4);
  EXPECT_EQ(v1.n_groups_changed, 1);
  EXPECT_EQ(v1.n_groups_requantized, 0);
  EXPECT_EQ(v1.max_abs_change, 0.0);
  EXPECT_EQ(count_zero_zeros(v1.linear), 0);
  EXPECT_TRUE(dequantize(v1.linear).equal(dequantize(linear)));
}

TEST(V1Zeros, FullRangeGroupsMoveToTheNearestGridWithZeroOne) {
  at::manual_seed(3);
  pack::UnpackedGptq linear = random_linear(8, 64, 4, 32, false, /*min_zero=*/1);
  linear.zeros[0][2] = 0;
  linear.codes[2][4] = 15;  // the group uses the whole range
  const V1Reencoding v1 = reencode_for_v1(linear, 4);
  EXPECT_EQ(v1.n_groups_changed, 1);
  EXPECT_EQ(v1.n_groups_requantized, 1);
  EXPECT_EQ(v1.linear.zeros[0][2].item<int>(), 1);
  const float widened = v1.linear.scales[0][2].item<float>();
  EXPECT_GT(widened, linear.scales[0][2].item<float>());
  // Rounding to the new grid moves a weight by at most half its step.
  EXPECT_GT(v1.max_abs_change, 0.0);
  EXPECT_LE(v1.max_abs_change, widened / 2 * (1 + 1e-6));
  const at::Tensor change = (dequantize(v1.linear) - dequantize(linear)).abs();
  EXPECT_EQ(change.max().item<double>(), v1.max_abs_change);
  // Only that group changed.
  change[2].narrow(0, 0, 32).zero_();
  EXPECT_EQ(change.max().item<double>(), 0.0);
  // v1 per-field readers (stored zero - 1, read + 1) now agree with the zeros.
  const pack::GptqTensors stored = pack::pack_gptq(v1.linear.codes, v1.linear.zeros, v1.linear.scales,
                                                   v1.linear.g_idx, 4, pack::ZeroEncoding::kMinusOne);
  EXPECT_TRUE((pack::unpack_rows(stored.qzeros, 4).to(at::kInt) + 1).equal(v1.linear.zeros));
}

// End to end on a small checkpoint directory.
class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("gptq_convert_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A v2 checkpoint of two asym 4-bit g32 linears; `zero_zeros` groups of the first get zero 0.
  fs::path write_v2(int zero_zeros) {
    at::manual_seed(4);
    const fs::path dir = root_ / "v2";
    fs::create_directories(dir);
    std::vector<std::pair<std::string, at::Tensor>> tensors = {{"model.norm.weight", at::ones({32}, at::kHalf)},
                                                               {"lm_head.weight", at::rand({16, 32}).to(at::kHalf)}};
    for (const char* prefix : {"model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"}) {
      pack::UnpackedGptq linear = random_linear(32, 64, 4, 32, false, /*min_zero=*/1);
      if (std::string(prefix).ends_with("up_proj")) {
        for (int idx = 0; idx < zero_zeros; ++idx) linear.zeros[idx % 2][idx / 2] = 0;
      }
      linears_[prefix] = linear;
      const pack::GptqTensors packed = pack::pack_gptq(linear.codes, linear.zeros, linear.scales, linear.g_idx, 4,
                                                       pack::ZeroEncoding::kExact);
      tensors.insert(tensors.end(), {{std::string(prefix) + ".qweight", packed.qweight},
                                     {std::string(prefix) + ".qzeros", packed.qzeros},
                                     {std::string(prefix) + ".scales", packed.scales},
                                     {std::string(prefix) + ".g_idx", packed.g_idx}});
    }
    io::save_file(dir / "model.safetensors", tensors);
    std::ofstream(dir / "config.json")
        << R"({"architectures": ["LlamaForCausalLM"], "torch_dtype": "float16", "quantization_config": )"
        << R"({"quant_method": "gptq", "checkpoint_format": "gptq_v2", "bits": 4, "group_size": 32, )"
        << R"("sym": false, "desc_act": false}})";
    std::ofstream(dir / "tokenizer.json") << "{}";
    return dir;
  }

  nlohmann::json convert(const fs::path& input, const std::string& to, const std::string& output,
                         bool allow_lossy = false) {
    ConvertOptions options;
    options.input = input;
    options.to = to;
    options.output = root_ / output;
    options.allow_lossy = allow_lossy;
    return run_convert(options);
  }

  static nlohmann::json read_json(const fs::path& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
  }

  fs::path root_;
  std::map<std::string, pack::UnpackedGptq> linears_;
};

TEST_F(ConvertTest, V2ToV1ToV2IsByteIdenticalWithoutZeroZeros) {
  const fs::path v2 = write_v2(0);
  const nlohmann::json to_v1 = convert(v2, "gptq", "v1");
  EXPECT_EQ(to_v1["linears_converted"], 2);
  EXPECT_EQ(to_v1["exact"], true);
  EXPECT_EQ(read_json(root_ / "v1" / "config.json")["quantization_config"]["checkpoint_format"], "gptq");
  EXPECT_EQ(read_json(root_ / "v1" / "quantize_config.json")["checkpoint_format"], "gptq");
  EXPECT_TRUE(fs::exists(root_ / "v1" / "tokenizer.json"));
  convert(root_ / "v1", "gptq_v2", "v2again");
  const io::Checkpoint before = io::Checkpoint::open(v2);
  const io::Checkpoint after = io::Checkpoint::open(root_ / "v2again");
  ASSERT_EQ(before.names(), after.names());
  for (const std::string& name : before.names()) EXPECT_TRUE(before.load(name).equal(after.load(name))) << name;
  const io::Checkpoint v1 = io::Checkpoint::open(root_ / "v1");
  EXPECT_FALSE(v1.load("model.layers.0.mlp.up_proj.qzeros").equal(before.load("model.layers.0.mlp.up_proj.qzeros")));
  EXPECT_TRUE(v1.load("model.layers.0.mlp.up_proj.qweight").equal(before.load("model.layers.0.mlp.up_proj.qweight")));
}

TEST_F(ConvertTest, V2ZeroZerosAreRefusedForV1WithTheirCount) {
  const fs::path v2 = write_v2(3);
  try {
    convert(v2, "gptq", "v1");
    FAIL() << "expected a refusal";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("3 group(s)"), std::string::npos) << message;
    EXPECT_NE(message.find("first: model.layers.0.mlp.up_proj"), std::string::npos) << message;
    EXPECT_NE(message.find("--allow-lossy"), std::string::npos) << message;
  }
  EXPECT_FALSE(fs::exists(root_ / "v1"));
  for (const auto& entry : fs::directory_iterator(root_)) {
    EXPECT_EQ(entry.path().filename().string().find("v1.tmp"), std::string::npos);
  }
}

TEST_F(ConvertTest, AllowLossyReencodesAndReports) {
  const fs::path v2 = write_v2(3);
  const nlohmann::json report = convert(v2, "gptq", "v1", /*allow_lossy=*/true);
  EXPECT_EQ(report["exact"], false);
  EXPECT_EQ(report["lossy"]["groups_changed"], 3);
  ASSERT_EQ(report["lossy"]["modules"].size(), 1u);
  EXPECT_EQ(report["lossy"]["modules"][0]["name"], "model.layers.0.mlp.up_proj");
  // Read back as v1: no zero of 0 and the weights moved by at most the reported change.
  const io::Checkpoint v1 = io::Checkpoint::open(root_ / "v1");
  const std::string prefix = "model.layers.0.mlp.up_proj";
  const pack::GptqTensors stored{v1.load(prefix + ".qweight"), v1.load(prefix + ".qzeros"),
                                 v1.load(prefix + ".scales"), v1.load(prefix + ".g_idx")};
  EXPECT_TRUE((pack::unpack_rows(stored.qzeros, 4).to(at::kInt) + 1).ge(1).all().item<bool>());
  const double change = (pack::dequantize_gptq(stored, 4) - dequantize(linears_[prefix])).abs().max().item<double>();
  EXPECT_DOUBLE_EQ(change, report["lossy"]["modules"][0]["max_abs_change"].get<double>());
}

TEST_F(ConvertTest, DenseAndCompressedTensorsHoldTheSameWeights) {
  const fs::path v2 = write_v2(2);  // v2 and compressed-tensors both hold a zero of 0
  const nlohmann::json dense = convert(v2, "fp32", "dense");
  EXPECT_EQ(dense["exact"], true);
  const nlohmann::json config = read_json(root_ / "dense" / "config.json");
  EXPECT_FALSE(config.contains("quantization_config"));
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_FALSE(fs::exists(root_ / "dense" / "quantize_config.json"));
  const io::Checkpoint dense_ckpt = io::Checkpoint::open(root_ / "dense");
  EXPECT_EQ(dense_ckpt.load("lm_head.weight").scalar_type(), at::kFloat);

  convert(v2, "compressed-tensors", "ct");
  const nlohmann::json quantization = read_json(root_ / "ct" / "config.json")["quantization_config"];
  EXPECT_EQ(quantization["quant_method"], "compressed-tensors");
  EXPECT_EQ(quantization["format"], "pack-quantized");
  EXPECT_EQ(quantization["config_groups"]["group_0"]["weights"]["num_bits"], 4);
  EXPECT_EQ(quantization["config_groups"]["group_0"]["weights"]["symmetric"], false);
  EXPECT_EQ(quantization["ignore"], nlohmann::json({"lm_head"}));
  const io::Checkpoint ct = io::Checkpoint::open(root_ / "ct");
  for (const auto& [prefix, linear] : linears_) {
    PackQuantized packed{ct.load(prefix + ".weight_packed"), ct.load(prefix + ".weight_scale"),
                         ct.load(prefix + ".weight_zero_point"), ct.load(prefix + ".weight_shape")};
    const at::Tensor from_ct = dequantize(from_pack_quantized(packed, quant(4, 32, false)));
    EXPECT_TRUE(from_ct.equal(dense_ckpt.load(prefix + ".weight"))) << prefix;
    EXPECT_TRUE(from_ct.equal(dequantize(linear))) << prefix;
  }
}

TEST_F(ConvertTest, RefusesExistingOutputsPlainModelsAndUnknownTargets) {
  const fs::path v2 = write_v2(0);
  fs::create_directories(root_ / "taken");
  EXPECT_THROW(convert(v2, "gptq", "taken"), InputError);
  EXPECT_THROW(convert(root_ / "taken", "fp16", "x"), InputError);
  EXPECT_THROW(convert(v2, "awq", "y"), InputError);
}

}  // namespace
}  // namespace gptq::convert
