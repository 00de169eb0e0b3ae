// The ggml block codec: type table, block layouts against hand-built blocks,
// the float types, and the errors.
#include "gptq/gguf/ggml_codec.h"

#include <ATen/ATen.h>
#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cstring>

#include "gptq/core/error.h"
#include "gptq/gguf/ggml_grid.h"

namespace gptq::gguf {
namespace {

uint16_t half_bits(float value) { return c10::Half(value).x; }

TEST(GgmlTypeTest, NamesSizesAndParsing) {
  EXPECT_EQ(type_info(GgmlType::kQ4_K).name, "q4_K");
  EXPECT_EQ(type_info(GgmlType::kQ6_K).type_size, 210);
  EXPECT_EQ(type_info(GgmlType::kQ5_K).type_size, 176);
  EXPECT_EQ(type_info(GgmlType::kQ8_0).type_size, 34);
  EXPECT_EQ(parse_ggml_type("Q4_K"), GgmlType::kQ4_K);
  EXPECT_EQ(parse_ggml_type("q4_k"), GgmlType::kQ4_K);
  EXPECT_EQ(parse_ggml_type("BF16"), GgmlType::kBF16);
  EXPECT_EQ(parse_ggml_type("f16"), GgmlType::kF16);
  EXPECT_FALSE(parse_ggml_type("q4_k_m").has_value());
  EXPECT_FALSE(parse_ggml_type("").has_value());
  EXPECT_EQ(static_cast<uint32_t>(GgmlType::kBF16), 30u);
}

TEST(GgmlTypeTest, RowBytesNeedWholeBlocks) {
  EXPECT_EQ(row_bytes(GgmlType::kQ4_0, 4096), 4096 / 32 * 18);
  EXPECT_EQ(row_bytes(GgmlType::kQ4_K, 4096), 16 * 144);
  EXPECT_EQ(row_bytes(GgmlType::kF16, 7), 14);
  EXPECT_THROW(row_bytes(GgmlType::kQ4_0, 48), InputError);
  EXPECT_THROW(row_bytes(GgmlType::kQ6_K, 128), InputError);
  EXPECT_THROW(row_bytes(GgmlType::kQ8_0, 0), InputError);
  EXPECT_EQ(ggml_group_size(GgmlType::kQ6_K), 16);
  EXPECT_EQ(ggml_group_size(GgmlType::kQ5_K), 32);
  EXPECT_THROW(ggml_group_size(GgmlType::kF32), InputError);
}

// One Q4_0 block built by hand from ggml-common.h's layout.
TEST(GgmlCodecTest, Q4_0BlockLayout) {
  at::Tensor codes = at::arange(32, at::kInt).remainder(16).to(at::kByte).reshape({1, 32});
  const at::Tensor scale = at::full({1, 1}, 0.5f), zero = at::full({1, 1}, 8.0f);
  const at::Tensor bytes = encode_rows(GgmlType::kQ4_0, codes, scale, zero);
  ASSERT_EQ(bytes.sizes(), (at::IntArrayRef{1, 18}));
  const uint8_t* b = bytes.data_ptr<uint8_t>();
  uint16_t d;
  std::memcpy(&d, b, 2);
  EXPECT_EQ(d, half_bits(0.5f));
  for (int idx = 0; idx < 16; ++idx) EXPECT_EQ(b[2 + idx], idx | (idx << 4));
  const at::Tensor values = decode_rows(GgmlType::kQ4_0, bytes, 32);
  EXPECT_EQ(values[0][1].item<float>(), 0.5f * (1 - 8));
  EXPECT_EQ(values[0][31].item<float>(), 0.5f * (15 - 8));
}

// A Q6_K block: value i's 6 bits split over ql/qh as ggml-common.h says.
TEST(GgmlCodecTest, Q6_KBlockLayout) {
  const at::Tensor codes = at::arange(256, at::kInt).remainder(64).to(at::kByte).reshape({1, 256});
  at::Tensor scales = at::empty({16, 1});
  for (int group = 0; group < 16; ++group) scales[group][0] = 0.25f * (group - 8 == 0 ? -128 : group - 8);
  scales[3][0] = 0.25f * -128;  // the largest magnitude: sc = -128 pins d = 0.25
  const at::Tensor bytes = encode_rows(GgmlType::kQ6_K, codes, scales, at::full({16, 1}, 32.0f));
  const uint8_t* b = bytes.data_ptr<uint8_t>();
  uint16_t d;
  std::memcpy(&d, b + 208, 2);
  EXPECT_EQ(d, half_bits(0.25f));
  EXPECT_EQ(static_cast<int8_t>(b[192 + 3]), -128);
  EXPECT_EQ(static_cast<int8_t>(b[192 + 9]), 1);
  // value 70 = 64 + 6: n 0, k 2, l 6 -> high nibble of ql[6], bits 4-5 of qh[6].
  EXPECT_EQ(b[6] >> 4, 70 % 64 & 0xF);
  EXPECT_EQ((b[128 + 6] >> 4) & 3, (70 % 64) >> 4);
  const at::Tensor values = decode_rows(GgmlType::kQ6_K, bytes, 256);
  for (int value_idx : {0, 17, 70, 130, 255}) {
    const float expected = scales[value_idx / 16][0].item<float>() * ((value_idx % 64) - 32);
    EXPECT_EQ(values[0][value_idx].item<float>(), expected) << value_idx;
  }
}

// Q4_K/Q5_K: the 6-bit scale/min packing and Q5_K's fifth bit.
TEST(GgmlCodecTest, Q5_KScalesMinsAndHighBits) {
  const at::Tensor codes = at::arange(256, at::kInt).remainder(32).to(at::kByte).reshape({1, 256});
  const float d = 0.125f, dmin = 0.5f;
  const std::vector<int> sc = {63, 1, 17, 40, 33, 62, 5, 48}, m = {0, 63, 9, 60, 2, 31, 44, 16};
  at::Tensor scales = at::empty({8, 1}), zeros = at::empty({8, 1});
  for (int group = 0; group < 8; ++group) {
    scales[group][0] = d * sc[group];
    zeros[group][0] = dmin * m[group];
  }
  for (GgmlType type : {GgmlType::kQ4_K, GgmlType::kQ5_K}) {
    const at::Tensor type_codes = type == GgmlType::kQ4_K ? codes.remainder(16) : codes;
    const at::Tensor bytes = encode_rows(type, type_codes, scales, zeros);
    const uint8_t* b = bytes.data_ptr<uint8_t>();
    // get_scale_min_k4 for group 5: sc from scales[9] low nibble and scales[1] top bits.
    EXPECT_EQ((b[4 + 9] & 0xF) | ((b[4 + 1] >> 6) << 4), 62);
    EXPECT_EQ((b[4 + 9] >> 4) | ((b[4 + 5] >> 6) << 4), 31);
    const at::Tensor values = decode_rows(type, bytes, 256);
    for (int value_idx = 0; value_idx < 256; value_idx += 7) {
      const int group = value_idx / 32;
      const float q = type_codes[0][value_idx].item<uint8_t>();
      EXPECT_EQ(values[0][value_idx].item<float>(), (d * sc[group]) * q - dmin * m[group]);
    }
  }
}

TEST(GgmlCodecTest, FloatTypesAreCasts) {
  at::manual_seed(1);
  const at::Tensor W = at::randn({5, 24}) * 3.0f;
  const at::Tensor f16 = quantize_rows(GgmlType::kF16, W, at::Tensor());
  EXPECT_TRUE(at::equal(f16.view(at::kHalf), W.to(at::kHalf)));
  EXPECT_TRUE(at::equal(decode_rows(GgmlType::kF16, f16, 24), W.to(at::kHalf).to(at::kFloat)));
  const at::Tensor bf16 = quantize_rows(GgmlType::kBF16, W, at::Tensor());
  EXPECT_TRUE(at::equal(decode_rows(GgmlType::kBF16, bf16, 24), W.to(at::kBFloat16).to(at::kFloat)));
  const at::Tensor f32 = quantize_rows(GgmlType::kF32, W.to(at::kHalf), at::Tensor());
  EXPECT_TRUE(at::equal(decode_rows(GgmlType::kF32, f32, 24), W.to(at::kHalf).to(at::kFloat)));
}

// quantize_rows for the legacy types is ggml's _ref: d from the float max,
// codes trunc(x / d + 8.5) (Q4_0), roundf (Q8_0).
TEST(GgmlCodecTest, LegacyReferenceQuantizers) {
  at::Tensor x = at::zeros({1, 32});
  x[0][0] = -1.6f;   // largest magnitude: d = 0.2 (before fp16)
  x[0][1] = 0.1f;    // 0.1 / 0.2 + 8.5 = 9.0 -> 9
  x[0][2] = 1.6f;    // 8 + 8.5 -> 16, clipped to 15
  const at::Tensor q4_0 = quantize_rows(GgmlType::kQ4_0, x, at::Tensor());
  const uint8_t* b = q4_0.data_ptr<uint8_t>();
  uint16_t d;
  std::memcpy(&d, b, 2);
  EXPECT_EQ(d, half_bits(0.2f));
  EXPECT_EQ(b[2] & 0xF, 0);
  EXPECT_EQ(b[3] & 0xF, 9);
  EXPECT_EQ(b[4] & 0xF, 15);
  at::Tensor y = at::zeros({1, 32});
  y[0][0] = 127.0f;
  y[0][1] = -2.5f;  // roundf: -3 (half away from zero), not -2
  const at::Tensor q8_0 = quantize_rows(GgmlType::kQ8_0, y, at::Tensor());
  EXPECT_EQ(static_cast<int8_t>(q8_0[0][2].item<uint8_t>()), 127);
  EXPECT_EQ(static_cast<int8_t>(q8_0[0][3].item<uint8_t>()), -3);
}

TEST(GgmlCodecTest, ScalesNotFromTheGridAreInternalErrors) {
  const at::Tensor codes = at::zeros({1, 256}, at::kByte);
  // 0.1 is no fp16 value.
  EXPECT_THROW(encode_rows(GgmlType::kQ4_0, codes.narrow(1, 0, 32), at::full({1, 1}, 0.1f),
                           at::full({1, 1}, 8.0f)),
               Error);
  EXPECT_THROW(encode_rows(GgmlType::kQ8_0, codes.narrow(1, 0, 32), at::full({1, 1}, 0.5f),
                           at::full({1, 1}, 127.0f)),
               Error);
  // Q4_K scales 1.0 and 1/3 share no fp16 d with 6-bit sub-scales.
  at::Tensor scales = at::full({8, 1}, 1.0f);
  scales[1][0] = 1.0f / 3.0f;
  EXPECT_THROW(encode_rows(GgmlType::kQ4_K, codes, scales, at::zeros({8, 1})), Error);
  // Q6_K: the largest sub-scale must be -128 d.
  EXPECT_THROW(encode_rows(GgmlType::kQ6_K, codes, at::full({16, 1}, 0.3f), at::full({16, 1}, 32.0f)),
               Error);
  // Shapes are input errors.
  EXPECT_THROW(encode_rows(GgmlType::kQ4_0, codes.narrow(1, 0, 32), at::full({2, 1}, 0.5f),
                           at::full({2, 1}, 8.0f)),
               InputError);
  EXPECT_THROW(decode_rows(GgmlType::kQ4_0, at::zeros({1, 17}, at::kByte), 32), InputError);
  EXPECT_THROW(quantize_rows(GgmlType::kQ4_K, at::randn({2, 128}), at::Tensor()), InputError);
}

}  // namespace
}  // namespace gptq::gguf
