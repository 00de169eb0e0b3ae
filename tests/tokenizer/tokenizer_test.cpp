// Unit tests of the tokenizer pieces on small hand-made tokenizer.json files.
// Parity with Hugging Face `tokenizers` on real and trained tokenizers is
// tests/conformance/test_tokenizer_parity.py.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "gptq/tokenizer/tokenizer.h"
#include "gptq/tokenizer/regex.h"
#include "gptq/tokenizer/unicode.h"
#include "gptq/core/error.h"
#include "testing/shared_data.h"

namespace gptq::tokenizer {
namespace {

using json = nlohmann::json;

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::vector<std::string> pieces(const Regex& regex, std::string_view text) {
  std::vector<std::string> out;
  for (const auto& [begin, end] : regex.find_all(text)) out.emplace_back(text.substr(begin, end - begin));
  return out;
}

// Writes `config` as tokenizer.json in a fresh temp dir and loads it.
Tokenizer load(const json& config) {
  static int counter = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("gptq_tokenizer_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << config.dump();
  auto tokenizer = Tokenizer::from_model_dir(dir);
  std::filesystem::remove_all(dir);
  return tokenizer;
}

json bpe_model(const json& vocab, const json& merges) {
  return {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"dropout", nullptr}, {"unk_token", nullptr}};
}

json minimal(const json& model) {
  return {{"model", model}, {"added_tokens", json::array()}, {"normalizer", nullptr},
          {"pre_tokenizer", nullptr}, {"post_processor", nullptr}, {"decoder", nullptr}};
}

TEST(TokenizerRegex, Gpt2PatternSplitsLikeGpt2) {
  const Regex regex(kGpt2Pattern);
  EXPECT_EQ(pieces(regex, "I'm  here 123!!"), (std::vector<std::string>{"I", "'m", " ", " here", " 123", "!!"}));
  // \p{L} is Unicode-aware (UCP), and the lookahead keeps the last space for the word.
  EXPECT_EQ(pieces(regex, "naïve  Привет\n"), (std::vector<std::string>{"naïve", " ", " Привет", "\n"}));
}

TEST(TokenizerRegex, LiteralAndEmptyMatches) {
  EXPECT_EQ(pieces(Regex::literal("a.b"), "a.bxa.b"), (std::vector<std::string>{"a.b", "a.b"}));
  EXPECT_EQ(pieces(Regex::literal("\\E"), "x\\Ey"), (std::vector<std::string>{"\\E"}));
  EXPECT_EQ(Regex("x*").find_all("axb").size(), 3u);  // "", "x" at 1, "" at the end (not right after "x")
  EXPECT_THROW(Regex("(unclosed"), InputError);
}

TEST(TokenizerUnicode, ByteLevelMapRoundTrips) {
  EXPECT_EQ(unicode::byte_to_unicode(' '), "Ġ");
  EXPECT_EQ(unicode::byte_to_unicode('\n'), "Ċ");
  EXPECT_EQ(unicode::byte_to_unicode('a'), "a");
  for (int b = 0; b < 256; ++b) {
    int length;
    const std::string& mapped = unicode::byte_to_unicode(static_cast<uint8_t>(b));
    EXPECT_EQ(unicode::unicode_to_byte(unicode::decode_at(mapped, 0, &length)), b);
    EXPECT_EQ(length, static_cast<int>(mapped.size()));
  }
}

TEST(TokenizerUnicode, LossyUtf8MatchesRust) {
  EXPECT_EQ(unicode::from_utf8_lossy("a\xC3\xA9z"), "a\xC3\xA9z");
  // A truncated 3-byte sequence is one U+FFFD; a stray continuation byte another.
  EXPECT_EQ(unicode::from_utf8_lossy("\xE2\x82x\x80"), "\xEF\xBF\xBDx\xEF\xBF\xBD");
  EXPECT_FALSE(unicode::is_valid_utf8("\xED\xA0\x80"));  // surrogate
  EXPECT_TRUE(unicode::is_valid_utf8("\xF0\x9F\x98\x80"));
}

TEST(TokenizerBpe, MergesApplyInRankOrder) {
  const json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}};
  auto right_first = load(minimal(bpe_model(vocab, {"b c", "a bc", "a b"})));
  auto left_first = load(minimal(bpe_model(vocab, {"a b", "b c"})));
  EXPECT_EQ(right_first.encode("abc"), (std::vector<int32_t>{5}));
  EXPECT_EQ(left_first.encode("abc"), (std::vector<int32_t>{3, 2}));
  EXPECT_EQ(left_first.encode("bcab"), (std::vector<int32_t>{4, 3}));
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirstAndPairsMayBeArrays) {
  auto tokenizer = load(minimal(bpe_model({{"a", 0}, {"aa", 1}}, json::array({json::array({"a", "a"})}))));
  EXPECT_EQ(tokenizer.encode("aaa"), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(tokenizer.encode("aaaa"), (std::vector<int32_t>{1, 1}));
}

TEST(TokenizerBpe, ByteFallbackAndFusedUnk) {
  json vocab = {{"<unk>", 0}, {"a", 1}};
  json model = bpe_model(vocab, json::array());
  model["unk_token"] = "<unk>";
  model["fuse_unk"] = true;
  EXPECT_EQ(load(minimal(model)).encode("aéèa"), (std::vector<int32_t>{1, 0, 1}));
  model["fuse_unk"] = false;
  EXPECT_EQ(load(minimal(model)).encode("aéèa"), (std::vector<int32_t>{1, 0, 0, 1}));

  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 2 + b;
  }
  model = bpe_model(vocab, json::array());
  model["unk_token"] = "<unk>";
  model["byte_fallback"] = true;
  auto tokenizer = load(minimal(model));
  EXPECT_EQ(tokenizer.encode("aé"), (std::vector<int32_t>{1, 2 + 0xC3, 2 + 0xA9}));
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWords) {
  const json vocab = {{"a", 0}, {"b", 1}, {"ab", 2}, {"abb", 3}};
  json model = bpe_model(vocab, {"a b"});
  EXPECT_EQ(load(minimal(model)).encode("abb"), (std::vector<int32_t>{2, 1}));
  model["ignore_merges"] = true;
  EXPECT_EQ(load(minimal(model)).encode("abb"), (std::vector<int32_t>{3}));
}

// A byte-level tokenizer over single-byte tokens plus a few added tokens.
json byte_level_with_added(const json& added_tokens) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[unicode::byte_to_unicode(static_cast<uint8_t>(b))] = b;
  json config = minimal(bpe_model(vocab, json::array()));
  config["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  config["decoder"] = {{"type", "ByteLevel"}};
  config["added_tokens"] = added_tokens;
  return config;
}

json added(int id, const std::string& content, bool lstrip, bool rstrip, bool single_word, bool special) {
  return {{"id", id}, {"content", content}, {"lstrip", lstrip}, {"rstrip", rstrip}, {"single_word", single_word},
          {"normalized", false}, {"special", special}};
}

TEST(TokenizerAdded, SplitBeforeTheModelWithStripRules) {
  auto tokenizer = load(byte_level_with_added({added(300, "<m>", true, false, false, true),
                                               added(301, "<e>", false, true, false, true),
                                               added(302, "[W]", false, false, true, false)}));
  EXPECT_EQ(tokenizer.encode("a <m>b"), (std::vector<int32_t>{'a', 300, 'b'}));   // lstrip eats " "
  EXPECT_EQ(tokenizer.encode("a<e>  b"), (std::vector<int32_t>{'a', 301, 'b'}));  // rstrip eats "  "
  EXPECT_EQ(tokenizer.encode("x [W]"), (std::vector<int32_t>{'x', ' ', 302}));
  EXPECT_EQ(tokenizer.encode("x[W]").size(), 4u);  // single_word: inside a word it is plain text
  EXPECT_EQ(tokenizer.decode({'a', 300, 'b', 302}), "ab[W]");  // special tokens are skipped
  EXPECT_EQ(tokenizer.vocab_size(), 303);
}

TEST(TokenizerAdded, LongestMatchWins) {
  auto tokenizer = load(byte_level_with_added({added(300, "<a>", false, false, false, true),
                                               added(301, "<a><b>", false, false, false, true)}));
  EXPECT_EQ(tokenizer.encode("<a><b><a>"), (std::vector<int32_t>{301, 300}));
}

TEST(TokenizerDecode, ByteLevelRoundTripsUnicode) {
  auto tokenizer = load(byte_level_with_added(json::array()));
  const std::string text = "héllo 👨‍👩‍👧 世界\t\n";
  EXPECT_EQ(tokenizer.decode(tokenizer.encode(text)), text);
  EXPECT_THROW(tokenizer.encode("bad \xFF utf-8"), InputError);
}

TEST(TokenizerLoad, RejectsWhatItDoesNotImplement) {
  json config = minimal(bpe_model({{"a", 0}}, json::array()));
  config["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THROW(load(config), UnsupportedError);
  config = minimal(bpe_model({{"a", 0}}, {"a b"}));
  EXPECT_THROW(load(config), InputError);
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), InputError);
}

TEST(TokenizerShared, Stories260kSpecialTokensAndRoundTrip) {
  GPTQ_REQUIRE_SHARED_DATA(data);
  const auto tokenizer = Tokenizer::from_model_dir(data / "stories260k-hf");
  EXPECT_EQ(tokenizer.vocab_size(), 512);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  const std::string text = "Once upon a time, there was a little girl named Lily.";
  const auto ids = tokenizer.encode(text, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(std::vector<int32_t>(ids.begin() + 1, ids.end()), tokenizer.encode(text, false));
  EXPECT_EQ(tokenizer.decode(ids), text);
}

}  // namespace
}  // namespace gptq::tokenizer
