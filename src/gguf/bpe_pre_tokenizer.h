#pragma once
// Which llama.cpp pre-tokenizer (tokenizer.ggml.pre) a byte-level BPE
// tokenizer.json needs, decided from its normalizer and pre_tokenizer.
// convert_hf_to_gguf.py hashes HF's tokenization of a fixed text instead; that
// needs transformers at run time, so we match the structure llama.cpp's
// pre-tokenizer regexes reproduce (src/llama-vocab.cpp):
//   "gpt-2"      ByteLevel{use_regex: true, add_prefix_space: false}, no normalizer
//   "llama-bpe"  Sequence[Split{Llama-3 regex, Isolated, not inverted},
//                         ByteLevel{use_regex: false, add_prefix_space: false}], no normalizer
//   "qwen2"      the same with Qwen2's regex (digits one by one), no normalizer or NFC
// Anything else: UnsupportedError naming `what` (the tokenizer.json) and the
// pre-tokenizer's type.
#include <nlohmann/json.hpp>

#include <string>

namespace gptq::gguf {

std::string detect_bpe_pre_tokenizer(const nlohmann::json& tokenizer_json, const std::string& what);

}  // namespace gptq::gguf
