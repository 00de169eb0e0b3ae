#pragma once
// Decoder: the `decoder` of a tokenizer.json, turning token strings back into
// text as `tokenizers`' decode_chain: each step maps the list of token strings
// to a new list, and the result is their concatenation. Supported: ByteLevel,
// ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence. Without a decoder the
// tokens are joined with spaces (as `tokenizers`).
#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <vector>

namespace gptq::tokenizer {

class Decoder {
 public:
  static Decoder from_json(const nlohmann::json& config);
  std::string decode(std::vector<std::string> tokens) const;

  struct Step {
    virtual ~Step() = default;
    virtual std::vector<std::string> apply(std::vector<std::string> tokens) const = 0;
  };

 private:
  void add(const nlohmann::json& config);
  bool present_ = false;
  std::vector<std::shared_ptr<const Step>> steps_;
};

}  // namespace gptq::tokenizer
