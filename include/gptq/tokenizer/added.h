#pragma once
// AddedVocabulary: the "added_tokens" of a tokenizer.json, split out of the text
// before normalization and the model run, as `tokenizers`' AddedVocabulary:
// tokens with normalized=false are matched on the raw text, then each remaining
// piece is normalized and the normalized=true tokens (whose patterns are their
// normalized content) are matched on it. Matching is leftmost-longest over all
// patterns; single_word rejects matches touching a word character; lstrip/rstrip
// absorb the whitespace on that side into the token.
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gptq::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A piece of text after splitting: either an added token or text for the model.
struct TextPiece {
  std::string text;
  std::optional<int32_t> token_id;
  bool at_text_start = false;  // the piece begins at offset 0 of the raw text
};

class AddedVocabulary {
 public:
  // `normalize` maps a normalized=true token's content to its match pattern.
  AddedVocabulary(std::vector<AddedToken> tokens, const std::function<std::string(std::string_view)>& normalize);

  // Raw text -> pieces; model pieces are normalized with `normalize`. Empty
  // pieces are dropped.
  std::vector<TextPiece> split(std::string_view text, const std::function<std::string(std::string_view)>& normalize) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  std::optional<int32_t> token_to_id(std::string_view content) const;
  const AddedToken* find_by_id(int32_t id) const;

 private:
  struct Matcher {
    std::vector<std::string> patterns;
    std::vector<size_t> token_index;  // patterns[k] belongs to tokens_[token_index[k]]
    std::unordered_map<unsigned char, std::vector<size_t>> by_first_byte;
  };
  struct Match {
    size_t begin, end, token_index;
  };
  void add_pattern(Matcher& matcher, std::string pattern, size_t token_index);
  std::vector<Match> find_matches(const Matcher& matcher, std::string_view text) const;

  std::vector<AddedToken> tokens_;
  Matcher raw_;
  Matcher normalized_;
  std::unordered_map<int32_t, size_t> by_id_;
};

}  // namespace gptq::tokenizer
