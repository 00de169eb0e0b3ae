// gptq_tool_gguf_vocab_dump: prints gptq::gguf::read_gguf_vocab's result as one
// JSON object keyed by the GGUF metadata keys the converter writes
// (tokenizer.ggml.tokens, tokenizer.ggml.bos_token_id, ...); a field that is
// not written is absent. Used by tests/conformance/test_gguf_vocab.py.
//   gptq_tool_gguf_vocab_dump <model_dir> <vocab_size>
// Exit 2 on bad input, as the CLI.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <iostream>
#include <string>

#include "gptq/core/error.h"
#include "gptq/gguf/gguf_vocab.h"

namespace {

nlohmann::json to_json(const gptq::gguf::GgufVocab& vocab) {
  nlohmann::json out = nlohmann::json::object();
  const auto put_id = [&](const char* key, const std::optional<uint32_t>& id) {
    if (id) out[key] = *id;
  };
  const auto put_bool = [&](const char* key, const std::optional<bool>& value) {
    if (value) out[key] = *value;
  };
  out["tokenizer.ggml.model"] = vocab.model;
  if (!vocab.pre.empty()) out["tokenizer.ggml.pre"] = vocab.pre;
  out["tokenizer.ggml.tokens"] = vocab.tokens;
  if (!vocab.scores.empty()) out["tokenizer.ggml.scores"] = vocab.scores;
  out["tokenizer.ggml.token_type"] = vocab.token_types;
  if (!vocab.merges.empty()) out["tokenizer.ggml.merges"] = vocab.merges;
  put_id("tokenizer.ggml.bos_token_id", vocab.bos_id);
  put_id("tokenizer.ggml.eos_token_id", vocab.eos_id);
  put_id("tokenizer.ggml.unknown_token_id", vocab.unk_id);
  put_id("tokenizer.ggml.seperator_token_id", vocab.sep_id);
  put_id("tokenizer.ggml.padding_token_id", vocab.pad_id);
  put_id("tokenizer.ggml.mask_token_id", vocab.mask_id);
  put_id("tokenizer.ggml.eot_token_id", vocab.eot_id);
  put_id("tokenizer.ggml.eom_token_id", vocab.eom_id);
  put_bool("tokenizer.ggml.add_bos_token", vocab.add_bos);
  put_bool("tokenizer.ggml.add_eos_token", vocab.add_eos);
  put_bool("tokenizer.ggml.add_sep_token", vocab.add_sep);
  put_bool("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix);
  put_bool("tokenizer.ggml.normalizer.lowercase", vocab.normalizer_lowercase);
  put_bool("tokenizer.ggml.normalizer.strip_accents", vocab.normalizer_strip_accents);
  if (vocab.chat_template) out["tokenizer.chat_template"] = *vocab.chat_template;
  if (!vocab.named_chat_templates.empty()) {
    std::vector<std::string> names;
    for (const auto& [name, text] : vocab.named_chat_templates) {
      out["tokenizer.chat_template." + name] = text;
      names.push_back(name);
    }
    out["tokenizer.chat_templates"] = names;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::cerr << "usage: gptq_tool_gguf_vocab_dump <model_dir> <vocab_size>\n";
    return 2;
  }
  const auto vocab = gptq::gguf::read_gguf_vocab(argv[1], std::stoll(argv[2]));
  std::cout << to_json(vocab).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict) << '\n';
  return 0;
} catch (const gptq::Error& e) {
  std::cerr << "error: " << e.describe() << '\n';
  return e.exit_code();
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << '\n';
  return 1;
}
