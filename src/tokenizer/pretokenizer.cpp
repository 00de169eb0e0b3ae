#include "gptq/tokenizer/pretokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "gptq/tokenizer/regex.h"
#include "gptq/tokenizer/unicode.h"
#include "gptq/core/error.h"

namespace gptq::tokenizer {

namespace {

using json = nlohmann::json;

// The GPT-2 pattern `tokenizers`' ByteLevel uses when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior behavior_from_string(const std::string& name) {
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  GPTQ_CHECK_SUPPORTED(false, "tokenizer split behavior '", name, "' is not supported");
  return Behavior::kIsolated;
}

struct Span {
  size_t begin, end;
  bool is_match;
};

// `tokenizers`' NormalizedString::split: the pieces of `text` around the matches.
void split_by(const Regex& pattern, Behavior behavior, bool invert, std::string_view text,
              std::vector<std::string>& out) {
  std::vector<Span> spans;
  size_t previous = 0;
  for (const auto& [begin, end] : pattern.find_all(text)) {
    if (begin != previous) spans.push_back({previous, begin, invert});
    spans.push_back({begin, end, !invert});
    previous = end;
  }
  if (previous != text.size()) spans.push_back({previous, text.size(), invert});

  std::vector<Span> merged;
  switch (behavior) {
    case Behavior::kIsolated:
      merged = spans;
      break;
    case Behavior::kRemoved:
      for (const auto& span : spans)
        if (!span.is_match) merged.push_back(span);
      break;
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& span : spans) {
        if (span.is_match && !previous_match && !merged.empty()) merged.back().end = span.end;
        else merged.push_back(span);
        previous_match = span.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !merged.empty()) merged.back().begin = it->begin;
        else merged.push_back(*it);
        previous_match = it->is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case Behavior::kContiguous:
      for (const auto& span : spans) {
        if (!merged.empty() && merged.back().is_match == span.is_match) merged.back().end = span.end;
        else merged.push_back(span);
      }
      break;
  }
  for (const auto& span : merged)
    if (span.end > span.begin) out.emplace_back(text.substr(span.begin, span.end - span.begin));
}

class SplitStep final : public PreTokenizer::Step {
 public:
  SplitStep(Regex pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  std::vector<std::string> apply(std::vector<std::string> pieces, bool) const override {
    std::vector<std::string> out;
    for (const auto& piece : pieces) split_by(pattern_, behavior_, invert_, piece, out);
    return out;
  }

 private:
  Regex pattern_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelStep final : public PreTokenizer::Step {
 public:
  ByteLevelStep(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern);
  }
  std::vector<std::string> apply(std::vector<std::string> pieces, bool) const override {
    std::vector<std::string> words;
    for (auto& piece : pieces) {
      if (add_prefix_space_ && (piece.empty() || piece[0] != ' ')) piece.insert(piece.begin(), ' ');
      if (regex_) split_by(*regex_, Behavior::kIsolated, false, piece, words);
      else words.push_back(std::move(piece));
    }
    for (auto& word : words) word = unicode::bytes_to_unicode_string(word);
    return words;
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class MetaspaceStep final : public PreTokenizer::Step {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspaceStep(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split),
        separator_(Regex::literal(replacement_)) {}
  std::vector<std::string> apply(std::vector<std::string> pieces, bool at_text_start) const override {
    std::vector<std::string> out;
    for (size_t index = 0; index < pieces.size(); ++index) {
      std::string text;
      for (const char c : pieces[index]) {
        if (c == ' ') text += replacement_;
        else text += c;
      }
      const bool starts_with = text.compare(0, replacement_.size(), replacement_) == 0;
      const bool first = at_text_start && index == 0;
      if (!starts_with && (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && first)))
        text = replacement_ + text;
      if (split_) split_by(separator_, Behavior::kMergedWithNext, false, text, out);
      else out.push_back(std::move(text));
    }
    return out;
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
  Regex separator_;
};

MetaspaceStep::Prepend metaspace_prepend(const json& config) {
  if (config.contains("prepend_scheme")) {
    const auto scheme = config.at("prepend_scheme").get<std::string>();
    if (scheme == "always") return MetaspaceStep::Prepend::kAlways;
    if (scheme == "first") return MetaspaceStep::Prepend::kFirst;
    if (scheme == "never") return MetaspaceStep::Prepend::kNever;
    GPTQ_CHECK_SUPPORTED(false, "Metaspace prepend_scheme '", scheme, "' is not supported");
  }
  return config.value("add_prefix_space", true) ? MetaspaceStep::Prepend::kAlways : MetaspaceStep::Prepend::kNever;
}

}  // namespace

PreTokenizer PreTokenizer::from_json(const json& config) {
  PreTokenizer pre_tokenizer;
  if (!config.is_null()) pre_tokenizer.add(config);
  return pre_tokenizer;
}

void PreTokenizer::add(const json& config) {
  const std::string type = config.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& step : config.at("pretokenizers")) add(step);
  } else if (type == "ByteLevel") {
    steps_.push_back(std::make_shared<ByteLevelStep>(config.value("add_prefix_space", true),
                                                     config.value("use_regex", true)));
  } else if (type == "Split") {
    steps_.push_back(std::make_shared<SplitStep>(regex_from_pattern_json(config.at("pattern")),
                                                 behavior_from_string(config.at("behavior").get<std::string>()),
                                                 config.value("invert", false)));
  } else if (type == "Metaspace") {
    steps_.push_back(std::make_shared<MetaspaceStep>(config.value("replacement", std::string("\xE2\x96\x81")),
                                                     metaspace_prepend(config), config.value("split", true)));
  } else if (type == "Digits") {
    const char* pattern = config.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)";
    steps_.push_back(std::make_shared<SplitStep>(Regex(pattern), Behavior::kIsolated, false));
  } else {
    GPTQ_CHECK_SUPPORTED(false, "tokenizer pre_tokenizer '", type, "' is not supported");
  }
}

std::vector<std::string> PreTokenizer::split(std::string_view segment, bool at_text_start) const {
  std::vector<std::string> pieces{std::string(segment)};
  for (const auto& step : steps_) pieces = step->apply(std::move(pieces), at_text_start);
  std::erase_if(pieces, [](const std::string& piece) { return piece.empty(); });
  return pieces;
}

}  // namespace gptq::tokenizer
