#include "gptq/gguf/gguf_vocab.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <unordered_map>

#include "gguf/bpe_pre_tokenizer.h"
#include "gguf/hf_json.h"
#include "gguf/sentencepiece_model.h"
#include "gguf/special_vocab.h"
#include "gptq/core/error.h"

namespace gptq::gguf {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Which set_vocab convert_hf_to_gguf.py runs for the architecture.
enum class Family {
  kLlama,          // LlamaModel: SentencePiece, else LlamaHfVocab, else byte-level BPE
  kQwen2,          // Qwen2Model (and Qwen3Model): SentencePiece, else byte-level BPE
  kByteLevelOnly,  // TextModel's default (the Qwen MoE classes): byte-level BPE
};

Family family_of(const fs::path& config_path) {
  const json config = read_json_file(config_path);
  const json& architectures = member(config, "architectures");
  GPTQ_CHECK(architectures.is_array() && !architectures.empty() && architectures[0].is_string(), "'",
             config_path.string(), "': no architectures[0]");
  static const std::map<std::string, Family> kFamilies = {
      {"LlamaForCausalLM", Family::kLlama},         {"MistralForCausalLM", Family::kLlama},
      {"MixtralForCausalLM", Family::kLlama},       {"Qwen2ForCausalLM", Family::kQwen2},
      {"Qwen3ForCausalLM", Family::kQwen2},         {"Qwen2MoeForCausalLM", Family::kByteLevelOnly},
      {"Qwen3MoeForCausalLM", Family::kByteLevelOnly}};
  const std::string arch = architectures[0].get<std::string>();
  const auto found = kFamilies.find(arch);
  GPTQ_CHECK_SUPPORTED(found != kFamilies.end(), "'", config_path.string(), "': no GGUF vocabulary for architecture ",
                       arch, " (Llama, Mistral, Mixtral, Qwen2, Qwen3 and their MoE variants have one)");
  return found->second;
}

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }
bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// The converter's does_token_look_special: added tokens some models forget to
// mark special but llama.cpp must treat as control tokens.
bool looks_special(std::string_view token) {
  if (token == "<pad>" || token == "<mask>" || token == "<2mass>" || token == "[@BOS@]") return true;
  if (starts_with(token, "<|") && ends_with(token, "|>")) return true;
  if (starts_with(token, "<\xef\xbd\x9c") && ends_with(token, "\xef\xbd\x9c>")) return true;  // <｜ ... ｜>
  return starts_with(token, "<unused") && ends_with(token, ">");
}

// User-defined tokens are stored pre-normalised: SentencePiece's "▁" as a space.
std::string spaces_for_metaspace(const std::string& token) {
  constexpr std::string_view kMetaspace = "\xe2\x96\x81";
  std::string out;
  out.reserve(token.size());
  for (size_t pos = 0; pos < token.size();) {
    if (std::string_view(token).substr(pos, kMetaspace.size()) == kMetaspace) {
      out.push_back(' ');
      pos += kMetaspace.size();
    } else {
      out.push_back(token[pos++]);
    }
  }
  return out;
}

std::string pad_token(int64_t id) { return "[PAD" + std::to_string(id) + "]"; }

int64_t parse_id(const json& value, const fs::path& path, const std::string& context) {
  GPTQ_CHECK(value.is_number_integer(), "'", path.string(), "': ", context, " is not an integer token id");
  const int64_t id = value.get<int64_t>();
  GPTQ_CHECK(id >= 0, "'", path.string(), "': ", context, " has negative token id ", id);
  return id;
}

void resize_vocab(GgufVocab& out, int64_t n_tokens, float pad_score, bool with_scores) {
  out.tokens.resize(static_cast<size_t>(n_tokens));
  out.token_types.assign(static_cast<size_t>(n_tokens), static_cast<int32_t>(TokenType::kUnused));
  for (int64_t id = 0; id < n_tokens; ++id) out.tokens[static_cast<size_t>(id)] = pad_token(id);
  if (with_scores) out.scores.assign(static_cast<size_t>(n_tokens), pad_score);
}

// _create_vocab_sentencepiece: pieces, then added_tokens.json, then
// tokenizer_config.json's added_tokens_decoder, in a list of exactly n ids.
void read_sentencepiece_vocab(const fs::path& dir, int64_t vocab_size, GgufVocab& out) {
  const auto pieces = read_sentencepiece_model(dir / "tokenizer.model");
  const int64_t n_tokens = vocab_size > 0 ? vocab_size : static_cast<int64_t>(pieces.size());
  resize_vocab(out, n_tokens, -10000.0f, true);
  for (size_t id = 0; id < pieces.size() && static_cast<int64_t>(id) < n_tokens; ++id) {
    // sentencepiece's IsUnknown/IsControl/IsUnused/IsByte; a USER_DEFINED piece stays NORMAL.
    const PieceType type = pieces[id].type;
    const bool kept = type == PieceType::kUnknown || type == PieceType::kControl || type == PieceType::kUnused ||
                      type == PieceType::kByte;
    out.tokens[id] = pieces[id].piece;
    out.scores[id] = pieces[id].score;
    out.token_types[id] = static_cast<int32_t>(kept ? static_cast<TokenType>(type) : TokenType::kNormal);
  }
  const auto set_token = [&](int64_t id, std::string text, TokenType type) {
    if (id >= n_tokens) return;  // the converter warns and skips
    out.tokens[static_cast<size_t>(id)] = std::move(text);
    out.scores[static_cast<size_t>(id)] = -1000.0f;
    out.token_types[static_cast<size_t>(id)] = static_cast<int32_t>(type);
  };
  const fs::path added_path = dir / "added_tokens.json";
  const json added = read_json_file_if_present(added_path);
  GPTQ_CHECK(added.is_null() || added.is_object(), "'", added_path.string(), "': not a JSON object");
  if (added.is_object()) {
    for (const auto& [content, id] : added.items()) set_token(parse_id(id, added_path, content), content, TokenType::kUserDefined);
  }
  const fs::path config_path = dir / "tokenizer_config.json";
  const json& decoder = member(read_json_file_if_present(config_path), "added_tokens_decoder");
  if (!decoder.is_object()) return;
  for (const auto& [key, data] : decoder.items()) {
    int64_t id = -1;
    const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
    GPTQ_CHECK(error == std::errc() && end == key.data() + key.size() && id >= 0, "'", config_path.string(),
               "': added_tokens_decoder key '", key, "' is not a token id");
    const json& content = member(data, "content");
    GPTQ_CHECK(content.is_string(), "'", config_path.string(), "': added_tokens_decoder[", key, "] has no content");
    const std::string text = content.get<std::string>();
    if (truthy(member(data, "special")) || looks_special(text)) set_token(id, text, TokenType::kControl);
    else set_token(id, spaces_for_metaspace(text), TokenType::kUserDefined);
  }
}

// The vocabulary transformers' fast tokenizer reports: the model's vocab plus
// tokenizer.json's added_tokens (an added token's id wins over a model entry).
struct HfVocab {
  std::unordered_map<int64_t, std::string> by_id;
  std::map<int64_t, json> added_by_id;  // id -> the added_tokens entry
  std::unordered_map<std::string, int64_t> added_by_content;
  int64_t n_base = 0;                   // model vocab size (tokenizer.vocab_size)
  int64_t max_id = -1;
};

HfVocab read_hf_vocab(const json& tokenizer, const fs::path& path) {
  HfVocab vocab;
  const json& model_vocab = member(member(tokenizer, "model"), "vocab");
  GPTQ_CHECK(model_vocab.is_object(), "'", path.string(), "': model.vocab is not an object of token -> id");
  for (const auto& [token, id_value] : model_vocab.items()) {
    const int64_t id = parse_id(id_value, path, "model.vocab['" + token + "']");
    vocab.by_id.emplace(id, token);
    vocab.max_id = std::max(vocab.max_id, id);
  }
  vocab.n_base = static_cast<int64_t>(model_vocab.size());
  const json& added = member(tokenizer, "added_tokens");
  if (!added.is_array()) return vocab;
  for (const json& entry : added) {
    const json& content = member(entry, "content");
    GPTQ_CHECK(content.is_string(), "'", path.string(), "': an added token has no content");
    const int64_t id = parse_id(member(entry, "id"), path, "added token '" + content.get<std::string>() + "'");
    vocab.by_id[id] = content.get<std::string>();
    vocab.added_by_id[id] = entry;
    vocab.added_by_content[content.get<std::string>()] = id;
    vocab.max_id = std::max(vocab.max_id, id);
  }
  return vocab;
}

// get_vocab_base + _set_vocab_gpt2: every id below vocab_size, gaps as
// [PAD<id>]; added tokens CONTROL when special (or looking special), else
// USER_DEFINED; byte-level merges.
void read_byte_level_vocab(const fs::path& dir, int64_t vocab_size, GgufVocab& out) {
  const fs::path path = dir / "tokenizer.json";
  GPTQ_CHECK_SUPPORTED(is_file(path), "'", dir.string(), "': no tokenizer.json (or tokenizer.model); a GGUF "
                       "vocabulary needs one");
  const json tokenizer = read_json_file(path);
  const json& model_type = member(member(tokenizer, "model"), "type");
  GPTQ_CHECK_SUPPORTED(model_type == "BPE", "'", path.string(), "': model type ",
                       model_type.is_string() ? model_type.get<std::string>() : std::string("none"),
                       " is not a byte-level BPE llama.cpp's gpt2 vocabulary holds");
  out.model = "gpt2";
  out.pre = detect_bpe_pre_tokenizer(tokenizer, "'" + path.string() + "'");
  const HfVocab vocab = read_hf_vocab(tokenizer, path);
  const int64_t n_tokens = vocab_size > 0 ? vocab_size : static_cast<int64_t>(vocab.by_id.size());
  GPTQ_CHECK(vocab.max_id < n_tokens, "'", path.string(), "': token id ", vocab.max_id, " is not below vocab_size ",
             n_tokens);
  resize_vocab(out, n_tokens, 0.0f, false);
  for (const auto& [id, token] : vocab.by_id) {
    std::string text = token;
    TokenType type = TokenType::kNormal;
    if (const auto added = vocab.added_by_content.find(token); added != vocab.added_by_content.end()) {
      const auto entry = vocab.added_by_id.count(id) ? vocab.added_by_id.at(id) : vocab.added_by_id.at(added->second);
      if (truthy(member(entry, "special")) || looks_special(text)) {
        type = TokenType::kControl;
      } else {
        type = TokenType::kUserDefined;
        text = spaces_for_metaspace(text);
      }
    }
    out.tokens[static_cast<size_t>(id)] = std::move(text);
    out.token_types[static_cast<size_t>(id)] = static_cast<int32_t>(type);
  }
}

// Whether LlamaHfVocab takes tokenizer.json: a byte-fallback BPE with a
// Sequence decoder (Llama-2 in HF format). Llama-3 (ignore_merges, no byte
// fallback) and anything else go to the byte-level path, as the converter's
// TypeError / FileNotFoundError fallbacks do.
bool is_llama_hf(const json& tokenizer) {
  const json& model = member(tokenizer, "model");
  const json& byte_fallback = member(model, "byte_fallback");
  return member(model, "type") == "BPE" && byte_fallback.is_boolean() && byte_fallback.get<bool>() &&
         member(member(tokenizer, "decoder"), "type") == "Sequence";
}

// The token text of a tokenizer_config special-token entry (a string or an AddedToken dict).
std::optional<std::string> special_text(const json& entry) {
  const json& content = entry.is_object() ? member(entry, "content") : entry;
  return content.is_string() ? std::optional<std::string>(content.get<std::string>()) : std::nullopt;
}

// transformers' all_special_tokens for a LlamaTokenizer: the named special
// tokens (tokenizer_config.json's, else the class defaults <s>, </s>, <unk>)
// and the extra special tokens.
std::set<std::string> llama_special_tokens(const json& config) {
  static const std::map<std::string, std::string> kDefaults = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
  std::set<std::string> specials;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (config.is_object() && config.contains(key)) {
      if (auto text = special_text(config[key])) specials.insert(*text);
    } else if (kDefaults.count(key)) {
      specials.insert(kDefaults.at(key));
    }
  }
  for (const char* key : {"additional_special_tokens", "extra_special_tokens"}) {
    const json& extra = member(config, key);
    if (!extra.is_array()) continue;
    for (const json& entry : extra) {
      if (auto text = special_text(entry)) specials.insert(*text);
    }
  }
  return specials;
}

// LlamaHfVocab.all_tokens: the base vocabulary (byte tokens BYTE, special ones
// CONTROL), then added tokens past it; every score -1000, no padding.
void read_llama_hf_vocab(const fs::path& dir, const json& tokenizer, GgufVocab& out) {
  const fs::path path = dir / "tokenizer.json";
  const HfVocab vocab = read_hf_vocab(tokenizer, path);
  const std::set<std::string> special_texts = llama_special_tokens(read_json_file_if_present(dir / "tokenizer_config.json"));
  std::set<int64_t> special_ids;
  for (const std::string& text : special_texts) {
    for (const auto& [id, token] : vocab.by_id) {
      if (token == text) special_ids.insert(id);
    }
  }
  const auto is_byte_token = [](const std::string& text) {
    const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); };
    return text.size() == 6 && starts_with(text, "<0x") && hex(text[3]) && hex(text[4]) && text[5] == '>';
  };
  out.model = "llama";
  out.pre = "default";
  for (int64_t id = 0; id < vocab.n_base; ++id) {
    const auto found = vocab.by_id.find(id);
    GPTQ_CHECK(found != vocab.by_id.end(), "'", path.string(), "': token id ", id, " is missing from the vocabulary");
    const TokenType type = is_byte_token(found->second) ? TokenType::kByte
                           : special_ids.count(id)      ? TokenType::kControl
                                                        : TokenType::kNormal;
    out.tokens.push_back(found->second);
    out.token_types.push_back(static_cast<int32_t>(type));
  }
  for (const auto& [id, entry] : vocab.added_by_id) {
    if (id < vocab.n_base) continue;
    const std::string& text = vocab.by_id.at(id);
    out.tokens.push_back(text);
    out.token_types.push_back(static_cast<int32_t>(special_texts.count(text) ? TokenType::kControl : TokenType::kUserDefined));
  }
  out.scores.assign(out.tokens.size(), -1000.0f);
}

void apply_special_vocab(const SpecialVocab& special, GgufVocab& out) {
  const auto id = [&](const char* type) -> std::optional<uint32_t> {
    const auto found = special.ids.find(type);
    return found == special.ids.end() ? std::nullopt : std::optional<uint32_t>(found->second);
  };
  const auto add = [&](const char* type) -> std::optional<bool> {
    const auto found = special.add_tokens.find(type);
    return found == special.add_tokens.end() ? std::nullopt : std::optional<bool>(found->second);
  };
  // gguf-py's writer has no cls_token_id key: SpecialVocab drops cls with a warning.
  out.bos_id = id("bos"), out.eos_id = id("eos"), out.unk_id = id("unk"), out.sep_id = id("sep");
  out.pad_id = id("pad"), out.mask_id = id("mask"), out.eot_id = id("eot"), out.eom_id = id("eom");
  out.add_bos = add("bos"), out.add_eos = add("eos"), out.add_sep = add("sep");
  out.merges = special.merges;
  out.chat_template = special.chat_template;
  out.named_chat_templates = special.named_chat_templates;
  out.normalizer_lowercase = special.normalizer_lowercase;
  out.normalizer_strip_accents = special.normalizer_strip_accents;
}

void read_sentencepiece(const fs::path& dir, int64_t vocab_size, GgufVocab& out) {
  read_sentencepiece_vocab(dir, vocab_size, out);
  out.model = "llama";
  out.pre = "default";
  apply_special_vocab(load_special_vocab(dir, false, static_cast<int64_t>(out.tokens.size())), out);
}

void read_byte_level(const fs::path& dir, int64_t vocab_size, GgufVocab& out) {
  read_byte_level_vocab(dir, vocab_size, out);
  apply_special_vocab(load_special_vocab(dir, true, std::nullopt), out);
}

// LlamaModel.set_vocab.
void read_llama_family(const fs::path& dir, int64_t vocab_size, GgufVocab& out) {
  GPTQ_CHECK_SUPPORTED(!(is_file(dir / "tekken.json") && !is_file(dir / "tokenizer.json")), "'",
                       (dir / "tekken.json").string(), "': Mistral's tekken tokenizer has no GGUF vocabulary here");
  const fs::path config_path = dir / "tokenizer_config.json";
  const json config = read_json_file_if_present(config_path);
  GPTQ_CHECK_SUPPORTED(member(config, "tokenizer_class") != "HybridDNATokenizer", "'", config_path.string(),
                       "': HybridDNATokenizer has no GGUF vocabulary here");
  // CodeLlama's fill-in-the-middle ids (prefix/suffix/middle/eot) are not carried.
  GPTQ_CHECK_SUPPORTED(vocab_size != 32016, "'", (dir / "config.json").string(),
                       "': vocab_size 32016 (CodeLlama's FIM tokens) has no GGUF vocabulary here");
  if (const json& prefix = member(config, "add_prefix_space"); !prefix.is_null()) {
    GPTQ_CHECK(prefix.is_boolean(), "'", config_path.string(), "': add_prefix_space is not a boolean");
    out.add_space_prefix = prefix.get<bool>();
  }
  const fs::path tokenizer_path = dir / "tokenizer.json";
  const json tokenizer = is_file(dir / "tokenizer.model") ? json() : read_json_file_if_present(tokenizer_path);
  if (is_file(dir / "tokenizer.model")) {
    read_sentencepiece(dir, vocab_size, out);
  } else if (is_llama_hf(tokenizer)) {
    read_llama_hf_vocab(dir, tokenizer, out);
    apply_special_vocab(load_special_vocab(dir, false, static_cast<int64_t>(out.tokens.size())), out);
  } else {
    read_byte_level(dir, vocab_size, out);
  }
  if (vocab_size == 49152) out.add_bos = false;  // the converter's rule for Granite's small models
}

}  // namespace

GgufVocab read_gguf_vocab(const std::filesystem::path& model_dir, int64_t vocab_size) {
  GgufVocab out;
  switch (family_of(model_dir / "config.json")) {
    case Family::kLlama: read_llama_family(model_dir, vocab_size, out); break;
    case Family::kQwen2:
      if (is_file(model_dir / "tokenizer.model")) read_sentencepiece(model_dir, vocab_size, out);
      else read_byte_level(model_dir, vocab_size, out);
      break;
    case Family::kByteLevelOnly: read_byte_level(model_dir, vocab_size, out); break;
  }
  return out;
}

}  // namespace gptq::gguf
