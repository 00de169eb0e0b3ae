#pragma once
// SpecialVocab: what gguf-py's SpecialVocab (gguf-py/gguf/vocab.py) reads from
// a Hugging Face model directory besides the token list: special token ids,
// the add_*_token flags, the chat template, BPE merges and normalizer flags.
//
// Sources, in gguf-py's order: tokenizer.json (merges, normalizer,
// post_processor, added_tokens), tokenizer_config.json (*_token names looked
// up among tokenizer.json's added_tokens, add_*_token, chat_template, or
// chat_template.jinja / chat_template.json), config.json (*_token_id, also
// under text_config), merges.txt when merges are wanted and tokenizer.json has
// none. An id already set is kept (first source wins); with `n_vocab` an id at
// or past it is dropped, as gguf-py drops it with a warning.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gptq::gguf {

struct SpecialVocab {
  std::vector<std::string> merges;           // "left right", spaces inside a part as U+0120
  std::map<std::string, uint32_t> ids;       // "bos", "eos", "unk", "sep", "pad", "cls", "mask", "eot", "eom"
  std::map<std::string, bool> add_tokens;    // "bos" -> tokenizer_config's add_bos_token / post_processor
  std::optional<std::string> chat_template;  // the default template
  std::vector<std::pair<std::string, std::string>> named_chat_templates;  // name (sanitised) -> template, sorted
  std::optional<bool> normalizer_lowercase, normalizer_strip_accents;
};

// Throws InputError naming the file for malformed JSON or a negative id.
SpecialVocab load_special_vocab(const std::filesystem::path& model_dir, bool load_merges,
                                std::optional<int64_t> n_vocab);

}  // namespace gptq::gguf
