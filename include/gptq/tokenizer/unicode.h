#pragma once
// UTF-8 helpers shared by the tokenizer pieces, plus GPT-2's byte<->unicode map
// (ByteLevel pre-tokenizer/decoder): bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF map
// to the same code point, the other 68 bytes to U+0100.. in byte order, so every
// byte becomes a printable character.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gptq::tokenizer::unicode {

// Length of the UTF-8 sequence starting with `lead` (1 for invalid lead bytes).
int utf8_length(unsigned char lead);
// Decodes the code point at s[pos] (s must be valid UTF-8) and its byte length.
char32_t decode_at(std::string_view s, size_t pos, int* length);
void append_utf8(std::string& out, char32_t code_point);
bool is_valid_utf8(std::string_view s);
// Rust String::from_utf8_lossy: each maximal invalid subsequence -> U+FFFD.
std::string from_utf8_lossy(std::string_view bytes);

// Rust char::is_whitespace (Unicode White_Space) and char::is_alphanumeric
// (Alphabetic or Numeric), the classes added-token lstrip/rstrip/single_word use.
bool is_whitespace(char32_t c);
bool is_alphanumeric(char32_t c);

// ByteLevel mapping: the UTF-8 string of the code point byte b maps to.
const std::string& byte_to_unicode(uint8_t b);
// Inverse: the byte a mapped code point stands for, if it is one.
std::optional<uint8_t> unicode_to_byte(char32_t c);
// Maps every byte of s through byte_to_unicode.
std::string bytes_to_unicode_string(std::string_view s);

}  // namespace gptq::tokenizer::unicode
