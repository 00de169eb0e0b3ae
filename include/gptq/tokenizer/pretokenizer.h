#pragma once
// PreTokenizer: the `pre_tokenizer` of a tokenizer.json, splitting one
// normalized segment into the words the model encodes independently. Supported:
//   ByteLevel  optional GPT-2 regex split (use_regex), add_prefix_space, then
//              every byte mapped to its printable stand-in (tokenizer_unicode.h);
//   Split      Regex/String pattern, behaviors Removed, Isolated,
//              MergedWithPrevious, MergedWithNext, Contiguous; invert;
//   Metaspace  ' ' -> replacement, prepend_scheme always/first/never, split;
//   Digits     individual_digits or contiguous runs;
//   Sequence   of the above.
// Empty pieces are dropped, as in `tokenizers`.
#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gptq::tokenizer {

class PreTokenizer {
 public:
  // `config` may be null (the whole segment is one word).
  static PreTokenizer from_json(const nlohmann::json& config);
  // `at_text_start`: the segment begins at offset 0 of the original text
  // (Metaspace prepend_scheme "first" prepends only there).
  std::vector<std::string> split(std::string_view segment, bool at_text_start) const;

  struct Step {
    virtual ~Step() = default;
    // Rewrites/splits every piece; returns the new list (may contain empties).
    virtual std::vector<std::string> apply(std::vector<std::string> pieces, bool at_text_start) const = 0;
  };

 private:
  void add(const nlohmann::json& config);
  std::vector<std::shared_ptr<const Step>> steps_;
};

}  // namespace gptq::tokenizer
