#include "gptq/tokenizer/unicode.h"

#include <array>

#include "gptq/tokenizer/regex.h"

namespace gptq::tokenizer::unicode {
namespace {

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_string;
  std::array<int16_t, 512> code_point_to_byte;  // every mapped code point is < 0x144

  ByteLevelTables() {
    code_point_to_byte.fill(-1);
    int next_extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next_extra++);
      append_utf8(byte_to_string[b], cp);
      code_point_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& tables() {
  static const ByteLevelTables instance;
  return instance;
}

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Length of the valid UTF-8 sequence at s[pos], or 0 if it is not valid.
// Returns through `prefix` how many bytes form a valid prefix (for lossy decode).
int valid_sequence_length(std::string_view s, size_t pos, int* prefix) {
  const auto c0 = static_cast<unsigned char>(s[pos]);
  *prefix = 0;
  if (c0 < 0x80) return 1;
  int length;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c0 >= 0xC2 && c0 <= 0xDF) {
    length = 2;
  } else if (c0 >= 0xE0 && c0 <= 0xEF) {
    length = 3;
    if (c0 == 0xE0) lo = 0xA0;
    if (c0 == 0xED) hi = 0x9F;
  } else if (c0 >= 0xF0 && c0 <= 0xF4) {
    length = 4;
    if (c0 == 0xF0) lo = 0x90;
    if (c0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int k = 1; k < length; ++k) {
    if (pos + k >= s.size()) return 0;
    const auto c = static_cast<unsigned char>(s[pos + k]);
    const bool ok = k == 1 ? (c >= lo && c <= hi) : is_continuation(c);
    if (!ok) return 0;
    *prefix = k;
  }
  return length;
}

}  // namespace

int utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

char32_t decode_at(std::string_view s, size_t pos, int* length) {
  const auto c0 = static_cast<unsigned char>(s[pos]);
  const int n = std::min<int>(utf8_length(c0), static_cast<int>(s.size() - pos));
  *length = n;
  if (n == 1) return c0;
  char32_t cp = c0 & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[pos + k]) & 0x3F);
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_valid_utf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    int prefix;
    const int n = valid_sequence_length(s, pos, &prefix);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string from_utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    int prefix;
    const int n = valid_sequence_length(bytes, pos, &prefix);
    if (n > 0) {
      out.append(bytes.substr(pos, n));
      pos += n;
    } else {
      out.append("\xEF\xBF\xBD");
      pos += prefix + 1;  // the lead byte plus the valid part of its tail
    }
  }
  return out;
}

bool is_whitespace(char32_t c) {
  switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool is_alphanumeric(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  static const Regex alnum(R"(^[\p{L}\p{N}\p{Nl}\p{Mn}\p{Mc}])");
  std::string s;
  append_utf8(s, c);
  return !alnum.find_all(s).empty();
}

const std::string& byte_to_unicode(uint8_t b) { return tables().byte_to_string[b]; }

std::optional<uint8_t> unicode_to_byte(char32_t c) {
  if (c >= tables().code_point_to_byte.size()) return std::nullopt;
  const int16_t b = tables().code_point_to_byte[c];
  if (b < 0) return std::nullopt;
  return static_cast<uint8_t>(b);
}

std::string bytes_to_unicode_string(std::string_view s) {
  const auto& table = tables().byte_to_string;
  std::string out;
  out.reserve(s.size() * 2);
  for (const char c : s) out.append(table[static_cast<unsigned char>(c)]);
  return out;
}

}  // namespace gptq::tokenizer::unicode
