#pragma once
// gptq::tokenizer::Tokenizer: a Hugging Face `tokenizer.json` encoder/decoder whose ids
// match the `tokenizers` library (the parity target) for the tokenizers LLM
// checkpoints ship:
//   - byte-level BPE (GPT-2, Llama-3, Qwen2): ByteLevel pre-tokenizer, optionally
//     after a Split with the model's regex (PCRE2, UTF + UCP);
//   - SentencePiece-style BPE (Llama-2, Mistral, stories260K): Prepend/Replace
//     normalizers or a Metaspace pre-tokenizer, byte_fallback, fuse_unk;
//   - added/special tokens split out before the model (lstrip, rstrip,
//     single_word, normalized), TemplateProcessing/Roberta/Bert post-processors,
//     ByteLevel/ByteFallback/Fuse/Strip/Replace/Metaspace decoders.
// Anything else in a tokenizer.json (WordPiece/Unigram models, NFKC, dropout ...)
// is rejected at load time with UnsupportedError, never silently approximated.
//
// Text in and out is UTF-8; encode() throws InputError on invalid UTF-8. The
// object is immutable after loading except for an internal word cache, which is
// guarded, so encode/decode may be called from several threads.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gptq::tokenizer {

class Tokenizer {
 public:
  // Reads tokenizer.json; tokenizer_config.json beside it (if present) supplies
  // bos_token/eos_token. Throws InputError (unreadable/malformed file) or
  // UnsupportedError (a component this implementation does not handle).
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
  // <dir>/tokenizer.json.
  static Tokenizer from_model_dir(const std::filesystem::path& dir);

  // Ids as `tokenizers`' Tokenizer.encode(text, add_special_tokens).ids: added
  // tokens are always recognised; add_special_tokens applies the post-processor.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // As `tokenizers`' decode(ids, skip_special_tokens=True). Unknown ids are skipped.
  std::string decode(const std::vector<int32_t>& ids) const;

  // Largest id + 1 over the model vocabulary and the added tokens.
  int64_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // Id of a token string (model vocabulary or added token), if any.
  std::optional<int32_t> token_to_id(std::string_view token) const;

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gptq::tokenizer
