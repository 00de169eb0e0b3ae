#pragma once
// GgufVocab: the tokenizer of a Hugging Face model directory as llama.cpp's
// convert_hf_to_gguf.py would store it in a GGUF file (the tokenizer.* keys),
// computed without Python, sentencepiece or transformers.
//
// Which converter path runs follows config.json's architectures[0]:
//   LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM (LlamaModel.set_vocab):
//     tokenizer.model -> SentencePiece ("llama", pre "default", scores, types);
//     else tokenizer.json holding a byte-fallback BPE with a Sequence decoder
//     (Llama-2 HF) -> LlamaHfVocab ("llama", pre "default", scores -1000, no merges);
//     else byte-level BPE ("gpt2", merges). add_space_prefix from
//     tokenizer_config.json's add_prefix_space; vocab_size 49152 forces add_bos false.
//   Qwen2ForCausalLM, Qwen3ForCausalLM: tokenizer.model -> SentencePiece, else byte-level BPE.
//   Qwen2MoeForCausalLM, Qwen3MoeForCausalLM: byte-level BPE.
// Special ids, add_*_token flags, chat template and merges follow gguf-py's
// SpecialVocab (tokenizer.json's post_processor and added_tokens,
// tokenizer_config.json, then config.json's *_token_id; the first found wins).
//
// tokenizer.ggml.pre for byte-level BPE: the converter hashes HF's tokenization
// of a fixed text, which needs transformers at run time; we decide it from
// tokenizer.json's structure instead (normalizer, pre_tokenizer, model):
//   pre_tokenizer ByteLevel{use_regex: true, add_prefix_space: false},
//     no normalizer                                         -> "gpt-2"
//   Sequence[Split{Regex: R, Isolated}, ByteLevel{use_regex: false,
//     add_prefix_space: false}] with R Llama-3's regex
//     (\p{N}{1,3}), no normalizer                           -> "llama-bpe"
//   the same with R Qwen2's regex (\p{N}), no normalizer or NFC -> "qwen2"
// (names llama.cpp's src/llama-vocab.cpp accepts). Anything else is refused,
// as the converter refuses a hash it does not know. This names the pre-
// tokenizer llama.cpp must run; unlike the hash it does not tell apart two
// tokenizers that split text alike but differ in vocabulary (the converter
// refuses such a tokenizer, e.g. Qwen2's pre-tokenizer over GPT-2's vocabulary,
// where we write "qwen2").
//
// Known simplification: an added token that is not `normalized` is kept as it
// is; the converter round-trips it through HF's encode/decode, which is the
// identity for every tokenizer we know of.
//
// Errors: InputError naming the file for a missing/malformed config.json,
// tokenizer.model, tokenizer.json or tokenizer_config.json, or a token id at
// or past vocab_size; UnsupportedError naming the file for a tokenizer llama.cpp
// cannot represent (unknown pre-tokenizer, non-BPE tokenizer.json, CodeLlama's
// 32016-token FIM vocabulary, Mistral's tekken.json) or an architecture other
// than those above.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gptq::gguf {

// gguf-py's TokenType (tokenizer.ggml.token_type values).
enum class TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// One field per tokenizer.* key; an empty vector or nullopt means "not written".
struct GgufVocab {
  std::string model;                    // tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
  std::string pre;                      // tokenizer.ggml.pre (empty: not written)
  std::vector<std::string> tokens;      // tokenizer.ggml.tokens, id order, padded to the model's vocab_size as the converter pads
  std::vector<float> scores;            // tokenizer.ggml.scores (empty: not written)
  std::vector<int32_t> token_types;     // tokenizer.ggml.token_type (TokenType values)
  std::vector<std::string> merges;      // tokenizer.ggml.merges (empty: not written)
  std::optional<uint32_t> bos_id, eos_id, unk_id, sep_id, pad_id;   // tokenizer.ggml.*_token_id
  std::optional<bool> add_bos, add_eos;                             // tokenizer.ggml.add_bos_token / add_eos_token
  std::optional<std::string> chat_template;                         // tokenizer.chat_template

  // Keys SpecialVocab also writes for some tokenizers:
  std::optional<uint32_t> mask_id;      // tokenizer.ggml.mask_token_id
  std::optional<uint32_t> eot_id;       // tokenizer.ggml.eot_token_id (post_processor ends on a token other than eos)
  std::optional<uint32_t> eom_id;       // tokenizer.ggml.eom_token_id
  std::optional<bool> add_sep;          // tokenizer.ggml.add_sep_token
  std::optional<bool> add_space_prefix; // tokenizer.ggml.add_space_prefix (Llama family, tokenizer_config add_prefix_space)
  std::optional<bool> normalizer_lowercase;      // tokenizer.ggml.normalizer.lowercase
  std::optional<bool> normalizer_strip_accents;  // tokenizer.ggml.normalizer.strip_accents
  // A chat_template given as a list of {name, template}: each non-default one
  // as tokenizer.chat_template.<name> (name with non-alphanumerics as '_'),
  // their names sorted in tokenizer.chat_templates; "default" goes to chat_template.
  std::vector<std::pair<std::string, std::string>> named_chat_templates;
};

// Reads the tokenizer files of `model_dir` (config.json, tokenizer.model,
// tokenizer.json, tokenizer_config.json, added_tokens.json, merges.txt,
// chat_template.jinja/.json). `vocab_size` is config.json's vocab_size (the
// embedding rows); token lists are padded with "[PAD<id>]" UNUSED entries up
// to it where the converter pads. vocab_size <= 0: the tokenizer's own size.
GgufVocab read_gguf_vocab(const std::filesystem::path& model_dir, int64_t vocab_size);

}  // namespace gptq::gguf
