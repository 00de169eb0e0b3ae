#pragma once
// Normalizer: the `normalizer` of a tokenizer.json as a list of string rewrites
// applied in order (a "Sequence" is flattened). Supported steps: Prepend
// (only to a non-empty string), Replace (String or Regex pattern, all
// non-overlapping matches), Strip (Unicode whitespace, left/right), Lowercase.
// Unicode normalization forms (NFC/NFKC/...) are rejected as unsupported.
#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gptq::tokenizer {

class Normalizer {
 public:
  // `config` may be null (identity). Throws UnsupportedError for unknown types.
  static Normalizer from_json(const nlohmann::json& config);
  std::string normalize(std::string_view text) const;
  bool is_identity() const { return steps_.empty(); }

  struct Step {
    virtual ~Step() = default;
    virtual std::string apply(std::string text) const = 0;
  };

 private:
  void add(const nlohmann::json& config);
  std::vector<std::shared_ptr<const Step>> steps_;
};

}  // namespace gptq::tokenizer
