#pragma once
// Regex: a compiled PCRE2 pattern (UTF + UCP, JIT when available) used for the
// Split pre-tokenizer, the ByteLevel GPT-2 split and Replace normalizers. The
// patterns in tokenizer.json are written for Oniguruma; the ones real tokenizers
// use (\p{L}, \p{N}, (?i:...), lookahead (?!\S), \A, \z) mean the same in PCRE2.
// Subjects must be valid UTF-8 (checked once by the caller, not per match).
#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gptq::tokenizer {

class Regex {
 public:
  // Throws InputError naming the pattern if it does not compile.
  explicit Regex(const std::string& pattern);
  // A pattern matching `literal` exactly (Split/Replace "String" patterns).
  static Regex literal(std::string_view literal);
  // Non-overlapping matches [begin, end) left to right, as Rust's find_iter:
  // an empty match is skipped right after a previous match and otherwise
  // advances the search by one character.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view subject) const;

  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A tokenizer.json Split/Replace "pattern": {"String": literal} or {"Regex": pattern}.
Regex regex_from_pattern_json(const nlohmann::json& pattern);

}  // namespace gptq::tokenizer
