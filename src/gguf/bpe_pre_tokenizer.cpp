#include "gguf/bpe_pre_tokenizer.h"

#include "gguf/hf_json.h"
#include "gptq/core/error.h"

namespace gptq::gguf {
namespace {

using nlohmann::json;

// The Split regexes of Meta-Llama-3's and Qwen2's tokenizer.json; they differ
// only in how digits group (\p{N}{1,3} vs \p{N}), which llama.cpp's
// "llama-bpe" and "qwen2" pre-tokenizers reproduce.
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// tokenizers' defaults: ByteLevel{add_prefix_space: true, use_regex: true}.
bool byte_level(const json& step, bool use_regex) {
  if (member(step, "type") != "ByteLevel") return false;
  const json& prefix = member(step, "add_prefix_space");
  const json& regex = member(step, "use_regex");
  const bool add_prefix_space = prefix.is_boolean() ? prefix.get<bool>() : true;
  const bool uses_regex = regex.is_boolean() ? regex.get<bool>() : true;
  return !add_prefix_space && uses_regex == use_regex;
}

// The regex of an isolating, non-inverted Split, or "" for anything else.
std::string isolated_split_regex(const json& step) {
  if (member(step, "type") != "Split" || member(step, "behavior") != "Isolated") return "";
  if (truthy(member(step, "invert"))) return "";
  const json& regex = member(member(step, "pattern"), "Regex");
  return regex.is_string() ? regex.get<std::string>() : "";
}

std::string describe(const json& pre_tokenizer) {
  const json& type = member(pre_tokenizer, "type");
  return type.is_string() ? type.get<std::string>() : pre_tokenizer.is_null() ? "none" : "untyped";
}

}  // namespace

std::string detect_bpe_pre_tokenizer(const json& tokenizer_json, const std::string& what) {
  const json& normalizer = member(tokenizer_json, "normalizer");
  const json& pre_tokenizer = member(tokenizer_json, "pre_tokenizer");
  const json& normalizer_type = member(normalizer, "type");
  const bool no_normalizer = normalizer.is_null();
  std::string pre;
  if (byte_level(pre_tokenizer, true)) {
    if (no_normalizer) pre = "gpt-2";
  } else if (member(pre_tokenizer, "type") == "Sequence") {
    const json& steps = member(pre_tokenizer, "pretokenizers");
    if (steps.is_array() && steps.size() == 2 && byte_level(steps[1], false)) {
      const std::string regex = isolated_split_regex(steps[0]);
      if (regex == kLlama3Regex && no_normalizer) pre = "llama-bpe";
      if (regex == kQwen2Regex && (no_normalizer || normalizer_type == "NFC")) pre = "qwen2";
    }
  }
  GPTQ_CHECK_SUPPORTED(!pre.empty(), what, ": byte-level BPE pre-tokenizer '", describe(pre_tokenizer),
                       "' (normalizer '", normalizer.is_null() ? std::string("none") : describe(normalizer),
                       "') is not one llama.cpp's GGUF vocabulary can name here (known: GPT-2's ByteLevel "
                       "-> gpt-2, Llama-3's Split+ByteLevel -> llama-bpe, Qwen2's -> qwen2)");
  return pre;
}

}  // namespace gptq::gguf
