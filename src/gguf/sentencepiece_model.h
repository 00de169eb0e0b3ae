#pragma once
// The vocabulary of a SentencePiece model file (tokenizer.model): its pieces in
// id order, read straight from the protobuf wire format so no protobuf or
// sentencepiece library is needed at run time.
//
// Only ModelProto.pieces (field 1) is decoded; each SentencePiece message gives
//   piece (field 1, string), score (field 2, float, default 0),
//   type  (field 3, enum, default NORMAL = 1).
// Every other field (trainer/normalizer specs, ...) is skipped by wire type.
// The reader is bounded: every length is checked against the bytes left, the
// file against kMaxSentencePieceBytes, nesting is one level deep; a malformed
// file is an InputError naming it, never a crash or an over-read.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace gptq::gguf {

// sentencepiece_model.proto's SentencePiece.Type values (also GGUF's TokenType).
enum class PieceType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct SentencePiece {
  std::string piece;   // UTF-8 text of the piece ("▁the", "<0x0A>", "<s>")
  float score = 0.0f;  // log-probability (unigram) or merge rank (BPE models)
  PieceType type = PieceType::kNormal;
};

inline constexpr size_t kMaxSentencePieceBytes = size_t{1} << 30;

// Decodes `bytes` (the content of a tokenizer.model); `what` names it in errors.
// Throws InputError on a truncated or malformed message, an unknown wire type,
// a type outside 1..6 or a model with no pieces.
std::vector<SentencePiece> parse_sentencepiece_model(std::string_view bytes, const std::string& what);

// Reads and decodes the file at `path` (InputError naming it when it cannot be read).
std::vector<SentencePiece> read_sentencepiece_model(const std::filesystem::path& path);

}  // namespace gptq::gguf
