#include "gptq/tokenizer/normalizer.h"

#include <nlohmann/json.hpp>

#include "gptq/tokenizer/regex.h"
#include "gptq/tokenizer/unicode.h"
#include "gptq/core/error.h"

namespace gptq::tokenizer {
namespace {

using json = nlohmann::json;

class Prepend final : public Normalizer::Step {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string apply(std::string text) const override { return text.empty() ? text : prefix_ + text; }

 private:
  std::string prefix_;
};

class Replace final : public Normalizer::Step {
 public:
  Replace(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string apply(std::string text) const override {
    const auto matches = pattern_.find_all(text);
    if (matches.empty()) return text;
    std::string out;
    out.reserve(text.size());
    size_t last = 0;
    for (const auto& [begin, end] : matches) {
      out.append(text, last, begin - last);
      out.append(content_);
      last = end;
    }
    out.append(text, last, std::string::npos);
    return out;
  }

 private:
  Regex pattern_;
  std::string content_;
};

class Strip final : public Normalizer::Step {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  std::string apply(std::string text) const override {
    size_t begin = 0, end = text.size();
    int length;
    while (left_ && begin < end && unicode::is_whitespace(unicode::decode_at(text, begin, &length))) begin += length;
    while (right_ && end > begin) {
      size_t last = end - 1;
      while (last > begin && (static_cast<unsigned char>(text[last]) & 0xC0) == 0x80) --last;
      if (!unicode::is_whitespace(unicode::decode_at(text, last, &length))) break;
      end = last;
    }
    return text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

}  // namespace

Normalizer Normalizer::from_json(const json& config) {
  Normalizer normalizer;
  if (!config.is_null()) normalizer.add(config);
  return normalizer;
}

void Normalizer::add(const json& config) {
  const std::string type = config.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& step : config.at("normalizers")) add(step);
  } else if (type == "Prepend") {
    steps_.push_back(std::make_shared<Prepend>(config.at("prepend").get<std::string>()));
  } else if (type == "Replace") {
    steps_.push_back(std::make_shared<Replace>(regex_from_pattern_json(config.at("pattern")),
                                               config.at("content").get<std::string>()));
  } else if (type == "Strip") {
    steps_.push_back(std::make_shared<Strip>(config.value("strip_left", true), config.value("strip_right", true)));
  } else {
    GPTQ_CHECK_SUPPORTED(false, "tokenizer normalizer '", type, "' is not supported");
  }
}

std::string Normalizer::normalize(std::string_view text) const {
  std::string out(text);
  for (const auto& step : steps_) out = step->apply(std::move(out));
  return out;
}

}  // namespace gptq::tokenizer
