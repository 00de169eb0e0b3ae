// The SentencePiece ModelProto reader: real tokenizer.model files, hand-built
// messages, and truncated / corrupted bytes (InputError, never a crash).
#include "gguf/sentencepiece_model.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "gptq/core/error.h"
#include "testing/shared_data.h"

namespace gptq::gguf {
namespace {

std::string varint(uint64_t value) {
  std::string out;
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
  return out;
}

std::string field_bytes(uint32_t field, const std::string& bytes) { return varint(field << 3 | 2) + varint(bytes.size()) + bytes; }

std::string field_float(uint32_t field, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  std::string out = varint(field << 3 | 5);
  for (int index = 0; index < 4; ++index) out.push_back(static_cast<char>((bits >> (8 * index)) & 0xff));
  return out;
}

std::string field_varint(uint32_t field, uint64_t value) { return varint(field << 3) + varint(value); }

std::string piece(const std::string& text, float score, int type) {
  return field_bytes(1, field_bytes(1, text) + field_float(2, score) + field_varint(3, type));
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(SentencePieceModel, ReadsPiecesScoresAndTypesSkippingOtherFields) {
  const std::string trainer_spec = field_bytes(2, field_varint(3, 8000) + field_bytes(1, "input.txt"));
  const std::string fixed64 = varint(9 << 3 | 1) + std::string(8, '\x7f');
  const std::string bytes = trainer_spec + piece("<unk>", 0.0f, 2) + fixed64 + piece("\xe2\x96\x81the", -3.25f, 1) +
                            field_bytes(1, field_bytes(1, "x")) + piece("<0x0A>", 0.0f, 6);
  const auto pieces = parse_sentencepiece_model(bytes, "'m'");
  ASSERT_EQ(pieces.size(), 4u);
  EXPECT_EQ(pieces[0].piece, "<unk>");
  EXPECT_EQ(pieces[0].type, PieceType::kUnknown);
  EXPECT_EQ(pieces[1].piece, "\xe2\x96\x81the");
  EXPECT_EQ(pieces[1].score, -3.25f);
  EXPECT_EQ(pieces[2].piece, "x");  // score and type absent: proto defaults
  EXPECT_EQ(pieces[2].score, 0.0f);
  EXPECT_EQ(pieces[2].type, PieceType::kNormal);
  EXPECT_EQ(pieces[3].type, PieceType::kByte);
}

TEST(SentencePieceModel, MalformedMessagesAreInputErrorsNamingTheFile) {
  const std::vector<std::string> bad = {
      "",                                                // no pieces
      field_bytes(2, "abc"),                             // no pieces either
      "\x0a\xff\xff\xff\xff\x0f",                        // length past the end
      "\x0a",                                            // key without a length
      "\x0a\x05\x0a\x03" "ab",                            // piece string past its message
      std::string("\x0b\x00", 2),                        // wire type 3 (group)
      field_bytes(1, field_varint(3, 9)),                // type outside 1..6
      field_bytes(1, field_varint(2, 1)),                // score with the wrong wire type
      std::string(11, '\xff'),                           // endless varint
      field_bytes(1, varint(1 << 3 | 5) + "\x01\x02"),  // truncated fixed32
  };
  for (const std::string& bytes : bad) {
    try {
      parse_sentencepiece_model(bytes, "'bad.model'");
      ADD_FAILURE() << "accepted " << bytes.size() << " bad bytes";
    } catch (const InputError& error) {
      EXPECT_NE(std::string(error.what()).find("'bad.model'"), std::string::npos) << error.what();
    }
  }
}

TEST(SentencePieceModel, MissingFileIsInputErrorNamingIt) {
  EXPECT_THROW(read_sentencepiece_model("/nonexistent/tokenizer.model"), InputError);
}

TEST(SentencePieceModel, RealStories260kModel) {
  GPTQ_REQUIRE_SHARED_DATA(data);
  const auto pieces = read_sentencepiece_model(data / "stories260k-hf" / "tokenizer.model");
  ASSERT_EQ(pieces.size(), 512u);
  EXPECT_EQ(pieces[0].piece, "<unk>");
  EXPECT_EQ(pieces[0].type, PieceType::kUnknown);
  EXPECT_EQ(pieces[1].piece, "<s>");
  EXPECT_EQ(pieces[1].type, PieceType::kControl);
  EXPECT_EQ(pieces[3].piece, "<0x00>");
  EXPECT_EQ(pieces[3].type, PieceType::kByte);
  EXPECT_EQ(pieces[511].score, -252.0f);
}

TEST(SentencePieceModel, RealLlama2Model) {
  GPTQ_REQUIRE_SHARED_DATA(data);
  const auto pieces = read_sentencepiece_model(data / "tok-llama2" / "tokenizer.model");
  ASSERT_EQ(pieces.size(), 32000u);
  EXPECT_EQ(pieces[2].piece, "</s>");
  EXPECT_EQ(pieces[13].piece, "<0x0A>");
  EXPECT_EQ(pieces[259].piece, "\xe2\x96\x81\xe2\x96\x81");  // "▁▁"
  EXPECT_EQ(pieces[259].type, PieceType::kNormal);
}

// Every prefix and many single-byte corruptions of a real model either parse
// (a prefix cut at a message boundary) or throw InputError; none crashes.
TEST(SentencePieceModel, TruncatedAndCorruptedRealModelNeverCrashes) {
  GPTQ_REQUIRE_SHARED_DATA(data);
  const std::string bytes = read_file(data / "stories260k-hf" / "tokenizer.model");
  const auto full = parse_sentencepiece_model(bytes, "'m'");
  size_t n_rejected = 0;
  for (size_t length = 0; length < bytes.size(); ++length) {
    try {
      const auto pieces = parse_sentencepiece_model(std::string_view(bytes).substr(0, length), "'m'");
      ASSERT_LE(pieces.size(), full.size());
    } catch (const InputError&) {
      ++n_rejected;
    }
  }
  EXPECT_GT(n_rejected, bytes.size() / 2);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 4000; ++trial) {
    std::string corrupted = bytes;
    corrupted[rng() % corrupted.size()] = static_cast<char>(rng() & 0xff);
    try {
      parse_sentencepiece_model(corrupted, "'m'");
    } catch (const InputError&) {
    }
  }
  for (int trial = 0; trial < 200; ++trial) {
    std::string garbage(rng() % 512, '\0');
    for (char& c : garbage) c = static_cast<char>(rng() & 0xff);
    try {
      parse_sentencepiece_model(garbage, "'m'");
    } catch (const InputError&) {
    }
  }
}

}  // namespace
}  // namespace gptq::gguf
