#include "gptq/pack/gptq_pack.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <tuple>

#include "gptq/core/error.h"

namespace gptq::pack {
namespace {

int64_t max_code(int bits) { return (int64_t{1} << bits) - 1; }

// Raw 32-bit word of an int32 tensor element.
uint32_t word_at(const at::Tensor& words, int64_t row, int64_t col) {
  return static_cast<uint32_t>(words.index({row, col}).item<int32_t>());
}

struct Layer {
  at::Tensor codes, zeros, scales, g_idx;
};

// Random solver-like output; the first and last codes of every row and the
// first zero of every group are pinned to 0 and maxq so extremes are covered.
Layer random_layer(int64_t out_features, int64_t in_features, int64_t group_size, int bits,
                   bool permuted, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t maxq = max_code(bits);
  const int64_t effective_group = group_size == -1 ? in_features : group_size;
  const int64_t n_groups = (in_features + effective_group - 1) / effective_group;
  Layer layer;
  layer.codes = at::randint(0, maxq + 1, {out_features, in_features}, at::kByte);
  layer.codes.index_put_({at::indexing::Slice(), 0}, 0);
  layer.codes.index_put_({at::indexing::Slice(), in_features - 1}, maxq);
  layer.zeros = at::randint(0, maxq + 1, {n_groups, out_features}, at::kInt);
  layer.zeros.index_put_({at::indexing::Slice(), 0}, 0);
  layer.zeros.index_put_({at::indexing::Slice(), out_features - 1}, static_cast<int32_t>(maxq));
  layer.scales = at::rand({n_groups, out_features}, at::kFloat) * 0.01 + 1e-4;
  at::Tensor sequential = sequential_g_idx(in_features, group_size);
  if (permuted) {
    // desc_act: position k of the permuted order belongs to group k / group_size,
    // and g_idx is indexed by the original column.
    at::Tensor perm = at::randperm(in_features, at::kLong);
    layer.g_idx = at::empty({in_features}, at::kInt);
    layer.g_idx.index_put_({perm}, sequential);
  } else {
    layer.g_idx = sequential;
  }
  return layer;
}

using RoundTripParam = std::tuple<int /*bits*/, int /*group_size*/, bool /*permuted*/>;

class GptqPackRoundTrip : public ::testing::TestWithParam<RoundTripParam> {};

TEST_P(GptqPackRoundTrip, UnpackReturnsExactlyWhatWasPacked) {
  const auto [bits, group_size, permuted] = GetParam();
  // 320 inputs: g128 leaves a ragged last group of 64, g-1 one group.
  const int64_t out_features = 96, in_features = 320;
  Layer layer = random_layer(out_features, in_features, group_size, bits, permuted, 1234 + bits);

  GptqTensors packed = pack_gptq(layer.codes, layer.zeros, layer.scales, layer.g_idx, bits);
  const int64_t n_groups = layer.zeros.size(0);
  ASSERT_EQ(packed.qweight.scalar_type(), at::kInt);
  ASSERT_EQ(packed.qzeros.scalar_type(), at::kInt);
  ASSERT_EQ(packed.scales.scalar_type(), at::kHalf);
  ASSERT_EQ(packed.g_idx.scalar_type(), at::kInt);
  EXPECT_EQ(packed.qweight.sizes(), (at::IntArrayRef{in_features * bits / 32, out_features}));
  EXPECT_EQ(packed.qzeros.sizes(), (at::IntArrayRef{n_groups, out_features * bits / 32}));
  EXPECT_EQ(packed.scales.sizes(), (at::IntArrayRef{n_groups, out_features}));
  EXPECT_TRUE(at::equal(packed.g_idx, layer.g_idx));

  UnpackedGptq unpacked = unpack_gptq(packed, bits);
  EXPECT_TRUE(at::equal(unpacked.codes, layer.codes));
  EXPECT_TRUE(at::equal(unpacked.zeros, layer.zeros));
  EXPECT_TRUE(at::equal(unpacked.g_idx, layer.g_idx));
  EXPECT_TRUE(at::equal(unpacked.scales, layer.scales.to(at::kHalf).to(at::kFloat)));
}

INSTANTIATE_TEST_SUITE_P(
    AllWidthsAndGroups, GptqPackRoundTrip,
    ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Values(-1, 32, 64, 128, 96),
                       ::testing::Bool()),
    [](const ::testing::TestParamInfo<RoundTripParam>& info) {
      const int group_size = std::get<1>(info.param);
      return "b" + std::to_string(std::get<0>(info.param)) + "_g" +
             (group_size == -1 ? std::string("all") : std::to_string(group_size)) +
             (std::get<2>(info.param) ? "_actorder" : "_sequential");
    });

TEST(GptqPack, FourBitWordHoldsEightCodesLowestFirst) {
  at::Tensor codes = at::arange(8, at::kByte).unsqueeze(0);  // one output row
  at::Tensor words = pack_rows(codes, 4);
  ASSERT_EQ(words.sizes(), (at::IntArrayRef{1, 1}));
  EXPECT_EQ(word_at(words, 0, 0), 0x76543210u);
}

TEST(GptqPack, TwoAndEightBitWords) {
  at::Tensor two = at::tensor({1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3}, at::kInt).unsqueeze(0);
  EXPECT_EQ(word_at(pack_rows(two, 2), 0, 0), 0xC0000039u);
  at::Tensor eight = at::tensor({0x01, 0x80, 0xFF, 0x7F}, at::kInt).unsqueeze(0);
  EXPECT_EQ(word_at(pack_rows(eight, 8), 0, 0), 0x7FFF8001u);
}

TEST(GptqPack, ThreeBitCodesStraddleWordBoundaries) {
  // Code 10 = 0b101: low two bits at word 0 bits 30-31, high bit at word 1 bit 0.
  // Code 21 = 0b011: low bit at word 1 bit 31, high two bits at word 2 bits 0-1.
  at::Tensor codes = at::zeros({1, 32}, at::kByte);
  codes.index_put_({0, 10}, 5);
  codes.index_put_({0, 21}, 3);
  at::Tensor words = pack_rows(codes, 3);
  ASSERT_EQ(words.sizes(), (at::IntArrayRef{1, 3}));
  EXPECT_EQ(word_at(words, 0, 0), 1u << 30);
  EXPECT_EQ(word_at(words, 0, 1), (1u << 31) | 1u);
  EXPECT_EQ(word_at(words, 0, 2), 1u);

  // Codes 0, 11 and 22 start their words at offsets 0, 1 and 2.
  codes.zero_();
  codes.index_put_({0, 0}, 7);
  codes.index_put_({0, 11}, 7);
  codes.index_put_({0, 22}, 7);
  codes.index_put_({0, 31}, 7);
  words = pack_rows(codes, 3);
  EXPECT_EQ(word_at(words, 0, 0), 0x7u);
  EXPECT_EQ(word_at(words, 0, 1), 0x7u << 1);
  EXPECT_EQ(word_at(words, 0, 2), (0x7u << 2) | (0x7u << 29));
  EXPECT_TRUE(at::equal(unpack_rows(words, 3), codes));
}

TEST(GptqPack, QweightRunsDownTheInputDimension) {
  // codes[o, i] = i % 16 for 4 bits: qweight[w, o] holds inputs 8w..8w+7.
  at::Tensor codes = (at::arange(16, at::kInt) % 16).repeat({8, 1});  // [8 out, 16 in]
  at::Tensor zeros = at::full({1, 8}, 8, at::kInt);
  at::Tensor scales = at::ones({1, 8});
  GptqTensors packed = pack_gptq(codes, zeros, scales, sequential_g_idx(16, -1), 4);
  ASSERT_EQ(packed.qweight.sizes(), (at::IntArrayRef{2, 8}));
  for (int64_t out_idx = 0; out_idx < 8; ++out_idx) {
    EXPECT_EQ(word_at(packed.qweight, 0, out_idx), 0x76543210u);
    EXPECT_EQ(word_at(packed.qweight, 1, out_idx), 0xFEDCBA98u);
  }
}

TEST(GptqPack, SymmetricZerosAreStoredMinusOnePerField) {
  // sym zero = 2^(bits-1): v1 stores 2^(bits-1) - 1 in every field.
  const std::tuple<int, uint32_t, uint32_t, uint32_t> cases[] = {
      {2, 0x55555555u, 0x55555555u, 0x55555555u},
      {3, 0xDB6DB6DBu, 0xB6DB6DB6u, 0x6DB6DB6Du},  // 0b011 repeated across 96 bits
      {4, 0x77777777u, 0x77777777u, 0x77777777u},
      {8, 0x7F7F7F7Fu, 0x7F7F7F7Fu, 0x7F7F7F7Fu},
  };
  for (const auto& [bits, word0, word1, word2] : cases) {
    SCOPED_TRACE("bits=" + std::to_string(bits));
    const int64_t out_features = 32, in_features = 32;
    at::Tensor zeros = at::full({1, out_features}, int64_t{1} << (bits - 1), at::kInt);
    GptqTensors packed = pack_gptq(at::zeros({out_features, in_features}, at::kByte), zeros,
                                   at::ones({1, out_features}), sequential_g_idx(in_features, -1), bits);
    ASSERT_EQ(packed.qzeros.size(1), bits);
    EXPECT_EQ(word_at(packed.qzeros, 0, 0), word0);
    EXPECT_EQ(word_at(packed.qzeros, 0, 1), word1);
    if (bits > 2) {
      EXPECT_EQ(word_at(packed.qzeros, 0, 2), word2);
    }
    EXPECT_TRUE(at::equal(unpack_gptq(packed, bits).zeros, zeros));
  }
}

TEST(GptqPack, AsymmetricZeroOfZeroBorrowsLikeGptqModelAndRoundTrips) {
  // 4-bit, all zeros 0: 0 - 0x11111111 mod 2^32 = 0xEEEEEEEF.
  at::Tensor zeros = at::zeros({2, 8}, at::kInt);
  GptqTensors packed = pack_gptq(at::zeros({8, 8}, at::kByte), zeros, at::ones({2, 8}),
                                 sequential_g_idx(8, 4), 4);
  EXPECT_EQ(word_at(packed.qzeros, 0, 0), 0xEEEEEEEFu);
  EXPECT_TRUE(at::equal(unpack_gptq(packed, 4).zeros, zeros));
  // 3-bit is per field: (0 - 1) mod 8 = 7 everywhere.
  at::Tensor zeros3 = at::zeros({1, 32}, at::kInt);
  GptqTensors packed3 = pack_gptq(at::zeros({32, 32}, at::kByte), zeros3, at::ones({1, 32}),
                                  sequential_g_idx(32, -1), 3);
  for (int64_t word_idx = 0; word_idx < 3; ++word_idx) EXPECT_EQ(word_at(packed3.qzeros, 0, word_idx), 0xFFFFFFFFu);
  EXPECT_TRUE(at::equal(unpack_gptq(packed3, 3).zeros, zeros3));
}

TEST(GptqPack, DequantizeIsCodeMinusZeroTimesScale) {
  for (int bits : {2, 3, 4, 8}) {
    SCOPED_TRACE("bits=" + std::to_string(bits));
    Layer layer = random_layer(64, 256, 64, bits, /*permuted=*/true, 99);
    GptqTensors packed = pack_gptq(layer.codes, layer.zeros, layer.scales, layer.g_idx, bits);
    at::Tensor dequantized = dequantize_gptq(packed, bits);
    ASSERT_EQ(dequantized.scalar_type(), at::kFloat);
    ASSERT_EQ(dequantized.sizes(), (at::IntArrayRef{64, 256}));
    // Reference: element by element over a sample of positions, from the
    // unpacked (true) zeros and the fp16-rounded scales.
    at::Tensor scales16 = layer.scales.to(at::kHalf).to(at::kFloat);
    for (int64_t out_idx = 0; out_idx < 64; out_idx += 7) {
      for (int64_t in_idx = 0; in_idx < 256; in_idx += 5) {
        const int64_t group = layer.g_idx.index({in_idx}).item<int32_t>();
        const float code = layer.codes.index({out_idx, in_idx}).item<uint8_t>();
        const float zero = layer.zeros.index({group, out_idx}).item<int32_t>();
        const float scale = scales16.index({group, out_idx}).item<float>();
        EXPECT_EQ(dequantized.index({out_idx, in_idx}).item<float>(), (code - zero) * scale);
      }
    }
  }
}

TEST(GptqPack, RejectsBadInput) {
  Layer layer = random_layer(32, 64, 32, 4, false, 7);
  auto pack = [&](int bits) { return pack_gptq(layer.codes, layer.zeros, layer.scales, layer.g_idx, bits); };
  EXPECT_THROW(pack(5), InputError);
  EXPECT_THROW(pack(1), InputError);
  EXPECT_THROW(pack(16), InputError);
  // A code above maxq for 2 bits.
  EXPECT_THROW(pack(2), InputError);
  // Shapes that disagree.
  EXPECT_THROW(pack_gptq(layer.codes, layer.zeros, layer.scales.narrow(0, 0, 1), layer.g_idx, 4),
               InputError);
  EXPECT_THROW(pack_gptq(layer.codes, layer.zeros.narrow(1, 0, 16), layer.scales, layer.g_idx, 4),
               InputError);
  EXPECT_THROW(pack_gptq(layer.codes, layer.zeros, layer.scales, layer.g_idx.narrow(0, 0, 32), 4),
               InputError);
  EXPECT_THROW(pack_gptq(layer.codes.flatten(), layer.zeros, layer.scales, layer.g_idx, 4), InputError);
  // Out-of-range zero and group index, non-integer codes, integer scales.
  EXPECT_THROW(pack_gptq(layer.codes, layer.zeros + 16, layer.scales, layer.g_idx, 4), InputError);
  EXPECT_THROW(pack_gptq(layer.codes, layer.zeros - 20, layer.scales, layer.g_idx, 4), InputError);
  EXPECT_THROW(pack_gptq(layer.codes, layer.zeros, layer.scales, layer.g_idx + 1, 4), InputError);
  EXPECT_THROW(pack_gptq(layer.codes.to(at::kFloat), layer.zeros, layer.scales, layer.g_idx, 4), InputError);
  EXPECT_THROW(pack_gptq(layer.codes, layer.zeros, layer.zeros, layer.g_idx, 4), InputError);
  // 3 bits needs whole 32-value blocks on both dims; 4 bits needs multiples of 8.
  Layer odd = random_layer(32, 48, -1, 3, false, 8);
  EXPECT_THROW(pack_gptq(odd.codes, odd.zeros, odd.scales, odd.g_idx, 3), InputError);
  EXPECT_NO_THROW(pack_gptq(odd.codes, odd.zeros, odd.scales, odd.g_idx, 4));
  Layer narrow_out = random_layer(12, 64, -1, 4, false, 9);
  EXPECT_THROW(pack_gptq(narrow_out.codes, narrow_out.zeros, narrow_out.scales, narrow_out.g_idx, 4),
               InputError);
}

TEST(GptqPack, UnpackRejectsInconsistentTensors) {
  Layer layer = random_layer(32, 64, 32, 4, false, 11);
  GptqTensors packed = pack_gptq(layer.codes, layer.zeros, layer.scales, layer.g_idx, 4);
  EXPECT_THROW(unpack_gptq(packed, 8), InputError);  // qweight rows imply another in_features
  EXPECT_THROW(unpack_gptq(packed, 6), InputError);
  GptqTensors wrong_dtype = packed;
  wrong_dtype.qweight = packed.qweight.to(at::kLong);
  EXPECT_THROW(unpack_gptq(wrong_dtype, 4), InputError);
  GptqTensors float_scales = packed;
  float_scales.scales = packed.scales.to(at::kFloat);
  EXPECT_THROW(unpack_gptq(float_scales, 4), InputError);
  GptqTensors short_zeros = packed;
  short_zeros.qzeros = packed.qzeros.narrow(0, 0, 1);
  EXPECT_THROW(unpack_gptq(short_zeros, 4), InputError);
  GptqTensors bad_group = packed;
  bad_group.g_idx = packed.g_idx + 5;
  EXPECT_THROW(unpack_gptq(bad_group, 4), InputError);
}

TEST(GptqPack, LargeLayerPacksQuickly) {
  // A Llama-3-8B MLP projection; pack must not be the slow step of a run.
  const int64_t out_features = 4096, in_features = 14336, group_size = 128;
  at::manual_seed(3);
  at::Tensor codes = at::randint(0, 16, {out_features, in_features}, at::kByte);
  at::Tensor zeros = at::full({in_features / group_size, out_features}, 8, at::kInt);
  at::Tensor scales = at::rand({in_features / group_size, out_features});
  at::Tensor g_idx = sequential_g_idx(in_features, group_size);
  const auto start = std::chrono::steady_clock::now();
  GptqTensors packed = pack_gptq(codes, zeros, scales, g_idx, 4);
  const double pack_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto unpack_start = std::chrono::steady_clock::now();
  UnpackedGptq unpacked = unpack_gptq(packed, 4);
  const double unpack_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - unpack_start).count();
  RecordProperty("pack_seconds", std::to_string(pack_s));
  std::printf("pack 4096x14336 4-bit: %.3f s, unpack %.3f s\n", pack_s, unpack_s);
  EXPECT_TRUE(at::equal(unpacked.codes, codes));
  // Generous bound (shared 2-core CI machine); measured well under a second.
  EXPECT_LT(pack_s, 3.0);
}

}  // namespace
}  // namespace gptq::pack
