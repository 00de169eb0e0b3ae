// read_gguf_vocab on hand-made model directories: which converter path runs,
// special ids / add_* flags / chat template from tokenizer_config.json and the
// post_processor, padding, the pre-tokenizer rule and its refusals. The
// converter itself is compared in tests/conformance/test_gguf_vocab.py.
#include "gptq/gguf/gguf_vocab.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "gptq/core/error.h"
#include "testing/shared_data.h"

namespace gptq::gguf {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

class ModelDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gguf_vocab_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write(const std::string& name, const std::string& text) { std::ofstream(dir_ / name, std::ios::binary) << text; }
  void write_json(const std::string& name, const json& value) { write(name, value.dump()); }

  // A GPT-2-style byte-level BPE: 6 tokens, 2 added ones (ids 6, 7), one gap (id 8).
  json byte_level_tokenizer() const {
    return {{"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
            {"post_processor", {{"type", "ByteLevel"}}},
            {"decoder", {{"type", "ByteLevel"}}},
            {"added_tokens",
             {{{"id", 6}, {"content", "<|begin|>"}, {"special", true}, {"normalized", false}},
              {{"id", 7}, {"content", "\xe2\x96\x81tool"}, {"special", false}, {"normalized", false}}}},
            {"model",
             {{"type", "BPE"},
              {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}, {"\xc4\xa0", 3}, {"\xc4\xa0" "a", 4}, {"<|end|>", 5}}},
              {"merges", json::array({json::array({"a", "b"}), json::array({"\xc4\xa0", "a"})})}}}};
  }

  void write_config(const std::string& arch, const json& extra = json::object()) {
    json config = {{"architectures", {arch}}, {"vocab_size", 9}};
    config.update(extra);
    write_json("config.json", config);
  }

  fs::path dir_;
};

TEST_F(ModelDir, ByteLevelBpeWithSpecialIdsFromTokenizerConfig) {
  write_config("Qwen2ForCausalLM", {{"bos_token_id", 0}, {"eos_token_id", 5}, {"pad_token_id", 5}});
  write_json("tokenizer.json", byte_level_tokenizer());
  write_json("tokenizer_config.json", {{"bos_token", "<|begin|>"},
                                       {"eos_token", {{"content", "<|end|>"}, {"__type", "AddedToken"}}},
                                       {"add_bos_token", true},
                                       {"chat_template", "{{ messages }}"}});
  const GgufVocab vocab = read_gguf_vocab(dir_, 9);
  EXPECT_EQ(vocab.model, "gpt2");
  EXPECT_EQ(vocab.pre, "gpt-2");
  EXPECT_EQ(vocab.tokens, (std::vector<std::string>{"a", "b", "ab", "\xc4\xa0", "\xc4\xa0" "a", "<|end|>", "<|begin|>",
                                                    " tool", "[PAD8]"}));
  // <|end|> is not an added token but only looks special in the model vocab: NORMAL.
  EXPECT_EQ(vocab.token_types, (std::vector<int32_t>{1, 1, 1, 1, 1, 1, 3, 4, 5}));
  EXPECT_TRUE(vocab.scores.empty());
  EXPECT_EQ(vocab.merges, (std::vector<std::string>{"a b", "\xc4\xa0 a"}));
  EXPECT_EQ(vocab.bos_id, 6u);  // tokenizer_config's bos_token beats config.json's bos_token_id
  EXPECT_EQ(vocab.eos_id, 5u);  // <|end|> is no added token: config.json's id
  EXPECT_EQ(vocab.pad_id, 5u);
  EXPECT_FALSE(vocab.unk_id);
  // The ByteLevel post_processor says add neither; gguf-py keeps the
  // post_processor's answer over tokenizer_config's add_bos_token.
  EXPECT_EQ(vocab.add_bos, false);
  EXPECT_EQ(vocab.add_eos, false);
  EXPECT_EQ(vocab.chat_template, "{{ messages }}");
}

TEST_F(ModelDir, TemplateProcessingSetsAddBosAndSep) {
  write_config("LlamaForCausalLM");
  json tokenizer = byte_level_tokenizer();
  tokenizer["pre_tokenizer"] = {{"type", "Sequence"},
                                {"pretokenizers",
                                 {{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                                  {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  const json special = {{"SpecialToken", {{"id", "<|begin|>"}}}};
  tokenizer["post_processor"] = {{"type", "TemplateProcessing"},
                                 {"single", {special, {{"Sequence", {{"id", "A"}}}}}},
                                 {"pair", {special, {{"Sequence", {{"id", "A"}}}}, {{"SpecialToken", {{"id", "<|end|>"}}}},
                                           {{"Sequence", {{"id", "B"}}}}}}};
  tokenizer["model"]["merges"] = json::array({"a b"});
  write_json("tokenizer.json", tokenizer);
  write_json("tokenizer_config.json", {{"bos_token", "<|begin|>"}, {"eos_token", "<|end|>"}, {"add_prefix_space", false}});
  write("merges.txt", "#version: 0.2\nx y\n");  // tokenizer.json's merges win
  const GgufVocab vocab = read_gguf_vocab(dir_, 9);
  EXPECT_EQ(vocab.pre, "llama-bpe");
  EXPECT_EQ(vocab.add_bos, true);
  EXPECT_EQ(vocab.add_sep, true);  // A <|end|> B with <|end|> the eos
  EXPECT_FALSE(vocab.add_eos);
  EXPECT_EQ(vocab.add_space_prefix, false);
  EXPECT_EQ(vocab.merges, std::vector<std::string>{"a b"});
}

TEST_F(ModelDir, MergesTxtWhenTokenizerJsonHasNone) {
  write_config("Qwen3MoeForCausalLM");
  json tokenizer = byte_level_tokenizer();
  tokenizer["model"].erase("merges");
  write_json("tokenizer.json", tokenizer);
  write("merges.txt", "#version: 0.2\r\na b\r\nbad line here\r\n\xc4\xa0 a\r\n");
  EXPECT_EQ(read_gguf_vocab(dir_, 9).merges, (std::vector<std::string>{"a b", "\xc4\xa0 a"}));
}

TEST_F(ModelDir, UnknownPreTokenizerIsRefusedNamingTokenizerJson) {
  write_config("Qwen2ForCausalLM");
  json tokenizer = byte_level_tokenizer();
  tokenizer["pre_tokenizer"] = {{"type", "Metaspace"}};
  write_json("tokenizer.json", tokenizer);
  try {
    read_gguf_vocab(dir_, 9);
    FAIL() << "accepted a Metaspace pre-tokenizer";
  } catch (const UnsupportedError& error) {
    EXPECT_NE(std::string(error.what()).find("tokenizer.json"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("Metaspace"), std::string::npos) << error.what();
  }
}

TEST_F(ModelDir, TokenIdPastVocabSizeIsInputError) {
  write_config("Qwen2ForCausalLM");
  write_json("tokenizer.json", byte_level_tokenizer());
  EXPECT_THROW(read_gguf_vocab(dir_, 7), InputError);
}

TEST_F(ModelDir, UnsupportedArchitectureAndMissingFiles) {
  EXPECT_THROW(read_gguf_vocab(dir_, 9), InputError);  // no config.json
  write_config("GPT2LMHeadModel");
  EXPECT_THROW(read_gguf_vocab(dir_, 9), UnsupportedError);
  write_config("LlamaForCausalLM");
  EXPECT_THROW(read_gguf_vocab(dir_, 9), UnsupportedError);  // no tokenizer at all
  write("tokenizer.json", "{\"model\": ");
  EXPECT_THROW(read_gguf_vocab(dir_, 9), InputError);
  write("tokenizer.model", "\x0a\x05garbage");
  try {
    read_gguf_vocab(dir_, 9);
    FAIL() << "accepted a garbage tokenizer.model";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("tokenizer.model"), std::string::npos) << error.what();
  }
}

TEST_F(ModelDir, SentencePieceWithAddedTokensAndPadding) {
  GPTQ_REQUIRE_SHARED_DATA(data);
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(data / "stories260k-hf" / name, dir_ / name);
  }
  write_config("MistralForCausalLM", {{"bos_token_id", 1}, {"eos_token_id", 2}});
  write_json("added_tokens.json", {{"<extra>", 512}, {"<dropped>", 600}});
  const GgufVocab vocab = read_gguf_vocab(dir_, 514);
  EXPECT_EQ(vocab.model, "llama");
  EXPECT_EQ(vocab.pre, "default");
  ASSERT_EQ(vocab.tokens.size(), 514u);
  EXPECT_EQ(vocab.tokens[512], "<extra>");
  EXPECT_EQ(vocab.token_types[512], 4);
  EXPECT_EQ(vocab.scores[512], -1000.0f);
  EXPECT_EQ(vocab.tokens[513], "[PAD513]");
  EXPECT_EQ(vocab.token_types[513], 5);
  EXPECT_EQ(vocab.scores[513], -10000.0f);
  EXPECT_EQ(vocab.token_types[0], 2);
  EXPECT_EQ(vocab.bos_id, 1u);
  EXPECT_EQ(vocab.unk_id, 0u);
  EXPECT_EQ(vocab.add_bos, true);
  EXPECT_EQ(vocab.add_eos, false);
  EXPECT_TRUE(vocab.merges.empty());
}

}  // namespace
}  // namespace gptq::gguf
