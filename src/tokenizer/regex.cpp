#include "gptq/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include "gptq/tokenizer/unicode.h"
#include "gptq/core/error.h"

namespace gptq::tokenizer {

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Impl() {
    if (code) pcre2_code_free(code);
  }
};

namespace {

struct MatchData {
  pcre2_match_data* data;
  explicit MatchData(const pcre2_code* code) : data(pcre2_match_data_create_from_pattern(code, nullptr)) {}
  ~MatchData() { pcre2_match_data_free(data); }
};

}  // namespace

Regex::Regex(const std::string& pattern) : impl_(std::make_unique<Impl>()) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    throw InputError(detail::concat("tokenizer regex '", pattern, "' does not compile at offset ",
                                    error_offset, ": ", reinterpret_cast<const char*>(message)));
  }
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex Regex::literal(std::string_view literal) {
  std::string pattern = "\\Q";
  // \Q...\E cannot contain "\E"; split it out as an escaped sequence instead.
  for (size_t pos = 0; pos < literal.size(); ++pos) {
    if (literal[pos] == '\\' && pos + 1 < literal.size() && literal[pos + 1] == 'E') {
      pattern += "\\E\\\\E\\Q";
      ++pos;
    } else {
      pattern += literal[pos];
    }
  }
  pattern += "\\E";
  return Regex(pattern);
}

Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view subject) const {
  std::vector<std::pair<size_t, size_t>> matches;
  MatchData match(impl_->code);
  const auto* data = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t start = 0;
  size_t last_end = SIZE_MAX;
  while (start <= subject.size()) {
    const int rc = impl_->jit
                       ? pcre2_jit_match(impl_->code, data, subject.size(), start, PCRE2_NO_UTF_CHECK,
                                         match.data, nullptr)
                       : pcre2_match(impl_->code, data, subject.size(), start, PCRE2_NO_UTF_CHECK,
                                     match.data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    GPTQ_CHECK(rc >= 0, "tokenizer regex match failed (PCRE2 error ", rc, ")");
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.data);
    const size_t begin = ovector[0], end = ovector[1];
    if (begin == end) {
      if (begin != last_end) matches.emplace_back(begin, end);
      if (begin >= subject.size()) break;
      int length;
      unicode::decode_at(subject, begin, &length);
      start = begin + length;
      last_end = SIZE_MAX;
      continue;
    }
    matches.emplace_back(begin, end);
    start = end;
    last_end = end;
  }
  return matches;
}

Regex regex_from_pattern_json(const nlohmann::json& pattern) {
  if (pattern.contains("String")) return Regex::literal(pattern.at("String").get<std::string>());
  GPTQ_CHECK(pattern.contains("Regex"), "tokenizer pattern is neither String nor Regex: ", pattern.dump());
  return Regex(pattern.at("Regex").get<std::string>());
}

}  // namespace gptq::tokenizer
