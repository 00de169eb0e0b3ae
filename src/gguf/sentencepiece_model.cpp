#include "gguf/sentencepiece_model.h"

#include <cstring>
#include <fstream>

#include "gptq/core/error.h"

namespace gptq::gguf {
namespace {

enum class WireType : uint32_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

// A cursor over one protobuf message; every read checks the bytes left so a
// cut or corrupted file ends in an InputError at the offending offset.
class WireReader {
 public:
  WireReader(std::string_view bytes, size_t base_offset, const std::string& what)
      : bytes_(bytes), base_(base_offset), what_(what) {}

  bool done() const { return pos_ == bytes_.size(); }

  uint64_t varint() {
    uint64_t value = 0;
    // A varint carries at most 64 bits: 10 bytes of 7 bits each.
    for (int shift = 0; shift < 70; shift += 7) {
      GPTQ_CHECK(pos_ < bytes_.size(), what_, ": truncated varint at byte ", offset());
      const auto byte = static_cast<uint8_t>(bytes_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    fail("varint longer than 10 bytes");
  }

  // Reads a field key; returns the field number and sets `wire`.
  uint32_t key(WireType& wire) {
    const size_t at = offset();
    const uint64_t key = varint();
    const auto wire_value = static_cast<uint32_t>(key & 7);
    GPTQ_CHECK(wire_value == 0 || wire_value == 1 || wire_value == 2 || wire_value == 5, what_,
               ": unsupported protobuf wire type ", wire_value, " at byte ", at);
    GPTQ_CHECK((key >> 3) != 0 && (key >> 3) <= 0x1fffffff, what_, ": bad protobuf field number at byte ", at);
    wire = static_cast<WireType>(wire_value);
    return static_cast<uint32_t>(key >> 3);
  }

  std::string_view bytes() {
    const uint64_t length = varint();
    GPTQ_CHECK(length <= bytes_.size() - pos_, what_, ": field of ", length, " bytes at byte ", offset(),
               " runs past the end of its message");
    const std::string_view out = bytes_.substr(pos_, static_cast<size_t>(length));
    pos_ += static_cast<size_t>(length);
    return out;
  }

  uint32_t fixed32() {
    GPTQ_CHECK(bytes_.size() - pos_ >= 4, what_, ": truncated fixed32 at byte ", offset());
    uint32_t value = 0;
    for (int index = 3; index >= 0; --index) value = (value << 8) | static_cast<uint8_t>(bytes_[pos_ + index]);
    pos_ += 4;
    return value;
  }

  void skip(WireType wire) {
    switch (wire) {
      case WireType::kVarint: varint(); return;
      case WireType::kBytes: bytes(); return;
      case WireType::kFixed32: fixed32(); return;
      case WireType::kFixed64:
        GPTQ_CHECK(bytes_.size() - pos_ >= 8, what_, ": truncated fixed64 at byte ", offset());
        pos_ += 8;
        return;
    }
  }

  void expect(WireType got, WireType want, const char* field) {
    if (got != want) fail(std::string(field) + " has the wrong wire type");
  }

  size_t offset() const { return base_ + pos_; }
  // Offset in the file of the next byte, as base for a nested message.
  size_t nested_base(std::string_view nested) const { return base_ + static_cast<size_t>(nested.data() - bytes_.data()); }

  [[noreturn]] void fail(const std::string& message) const {
    throw InputError(gptq::detail::concat(what_, ": ", message, " at byte ", offset()));
  }

 private:
  std::string_view bytes_;
  size_t base_;
  size_t pos_ = 0;
  const std::string& what_;
};

SentencePiece parse_piece(WireReader& reader) {
  SentencePiece out;
  while (!reader.done()) {
    WireType wire;
    switch (reader.key(wire)) {
      case 1: {
        reader.expect(wire, WireType::kBytes, "SentencePiece.piece");
        out.piece = std::string(reader.bytes());
        break;
      }
      case 2: {
        reader.expect(wire, WireType::kFixed32, "SentencePiece.score");
        const uint32_t bits = reader.fixed32();
        std::memcpy(&out.score, &bits, sizeof(out.score));
        break;
      }
      case 3: {
        reader.expect(wire, WireType::kVarint, "SentencePiece.type");
        const uint64_t type = reader.varint();
        if (type < 1 || type > 6) reader.fail("SentencePiece.type " + std::to_string(type) + " is not 1..6");
        out.type = static_cast<PieceType>(type);
        break;
      }
      default: reader.skip(wire);
    }
  }
  return out;
}

}  // namespace

std::vector<SentencePiece> parse_sentencepiece_model(std::string_view bytes, const std::string& what) {
  GPTQ_CHECK(bytes.size() <= kMaxSentencePieceBytes, what, ": ", bytes.size(),
             " bytes is larger than any SentencePiece model (limit ", kMaxSentencePieceBytes, ")");
  std::vector<SentencePiece> pieces;
  WireReader model(bytes, 0, what);
  while (!model.done()) {
    WireType wire;
    const uint32_t field = model.key(wire);
    if (field != 1) {
      model.skip(wire);
      continue;
    }
    model.expect(wire, WireType::kBytes, "ModelProto.pieces");
    const std::string_view message = model.bytes();
    WireReader piece_reader(message, model.nested_base(message), what);
    pieces.push_back(parse_piece(piece_reader));
  }
  GPTQ_CHECK(!pieces.empty(), what, ": no SentencePiece pieces (not a SentencePiece model?)");
  return pieces;
}

std::vector<SentencePiece> read_sentencepiece_model(const std::filesystem::path& path) {
  const std::string what = "'" + path.string() + "'";
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in, what, ": cannot open");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  GPTQ_CHECK(size >= 0, what, ": cannot read its size");
  GPTQ_CHECK(static_cast<uint64_t>(size) <= kMaxSentencePieceBytes, what, ": ", size,
             " bytes is larger than any SentencePiece model (limit ", kMaxSentencePieceBytes, ")");
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  in.read(bytes.data(), size);
  GPTQ_CHECK(in.gcount() == size, what, ": short read");
  return parse_sentencepiece_model(bytes, what);
}

}  // namespace gptq::gguf
