#include "gptq/tokenizer/added.h"

#include <algorithm>

#include "gptq/tokenizer/unicode.h"

namespace gptq::tokenizer {
namespace {

// Code point ending at byte offset `end` (end > 0).
char32_t code_point_before(std::string_view text, size_t end) {
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
  int length;
  return unicode::decode_at(text, begin, &length);
}

size_t whitespace_run_before(std::string_view text, size_t end) {
  while (end > 0) {
    size_t begin = end - 1;
    while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
    int length;
    if (!unicode::is_whitespace(unicode::decode_at(text, begin, &length))) break;
    end = begin;
  }
  return end;
}

size_t whitespace_run_after(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    int length;
    if (!unicode::is_whitespace(unicode::decode_at(text, begin, &length))) break;
    begin += length;
  }
  return begin;
}

}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens,
                                 const std::function<std::string(std::string_view)>& normalize)
    : tokens_(std::move(tokens)) {
  for (size_t index = 0; index < tokens_.size(); ++index) {
    const AddedToken& token = tokens_[index];
    by_id_[token.id] = index;
    if (token.content.empty()) continue;
    if (token.normalized) add_pattern(normalized_, normalize(token.content), index);
    else add_pattern(raw_, token.content, index);
  }
}

void AddedVocabulary::add_pattern(Matcher& matcher, std::string pattern, size_t token_index) {
  if (pattern.empty()) return;
  matcher.by_first_byte[static_cast<unsigned char>(pattern[0])].push_back(matcher.patterns.size());
  matcher.patterns.push_back(std::move(pattern));
  matcher.token_index.push_back(token_index);
}

std::optional<int32_t> AddedVocabulary::token_to_id(std::string_view content) const {
  for (const auto& token : tokens_)
    if (token.content == content) return token.id;
  return std::nullopt;
}

const AddedToken* AddedVocabulary::find_by_id(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

// Leftmost-longest non-overlapping matches with the single_word/lstrip/rstrip
// rules of `tokenizers`' AddedVocabulary::find_matches.
std::vector<AddedVocabulary::Match> AddedVocabulary::find_matches(const Matcher& matcher, std::string_view text) const {
  std::vector<Match> matches;
  if (matcher.patterns.empty()) return matches;
  size_t consumed = 0;  // end of the previous accepted match
  size_t pos = 0;
  while (pos < text.size()) {
    const auto candidates = matcher.by_first_byte.find(static_cast<unsigned char>(text[pos]));
    size_t best = SIZE_MAX, best_length = 0;
    if (candidates != matcher.by_first_byte.end()) {
      for (const size_t pattern_index : candidates->second) {
        const std::string& pattern = matcher.patterns[pattern_index];
        if (pattern.size() > best_length && text.compare(pos, pattern.size(), pattern) == 0) {
          best = pattern_index;
          best_length = pattern.size();
        }
      }
    }
    if (best == SIZE_MAX) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[matcher.token_index[best]];
    size_t begin = pos, end = pos + best_length;
    pos = end;
    if (token.single_word) {
      int length;
      const bool word_before = begin > 0 && unicode::is_alphanumeric(code_point_before(text, begin));
      const bool word_after = end < text.size() && unicode::is_alphanumeric(unicode::decode_at(text, end, &length));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) begin = std::max(whitespace_run_before(text, begin), consumed);
    if (token.rstrip) end = whitespace_run_after(text, end);
    matches.push_back({begin, end, matcher.token_index[best]});
    consumed = end;
    pos = end;
  }
  return matches;
}

std::vector<TextPiece> AddedVocabulary::split(std::string_view text,
                                              const std::function<std::string(std::string_view)>& normalize) const {
  // Pass 1 on the raw text; model pieces keep their raw offset.
  std::vector<TextPiece> raw_pieces;
  size_t previous = 0;
  for (const auto& match : find_matches(raw_, text)) {
    if (match.begin > previous) raw_pieces.push_back({std::string(text.substr(previous, match.begin - previous)), std::nullopt, previous == 0});
    raw_pieces.push_back({std::string(), tokens_[match.token_index].id, match.begin == 0});
    previous = match.end;
  }
  if (previous < text.size()) raw_pieces.push_back({std::string(text.substr(previous)), std::nullopt, previous == 0});

  // Pass 2: normalize each model piece, then split out the normalized tokens.
  std::vector<TextPiece> pieces;
  for (auto& piece : raw_pieces) {
    if (piece.token_id) {
      pieces.push_back(std::move(piece));
      continue;
    }
    const std::string normalized = normalize(piece.text);
    size_t last = 0;
    for (const auto& match : find_matches(normalized_, normalized)) {
      if (match.begin > last)
        pieces.push_back({normalized.substr(last, match.begin - last), std::nullopt, piece.at_text_start && last == 0});
      pieces.push_back({std::string(), tokens_[match.token_index].id, false});
      last = match.end;
    }
    if (last < normalized.size())
      pieces.push_back({normalized.substr(last), std::nullopt, piece.at_text_start && last == 0});
  }
  return pieces;
}

}  // namespace gptq::tokenizer
