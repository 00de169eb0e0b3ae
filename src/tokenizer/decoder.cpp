#include "gptq/tokenizer/decoder.h"

#include <nlohmann/json.hpp>

#include "gptq/tokenizer/regex.h"
#include "gptq/tokenizer/unicode.h"
#include "gptq/core/error.h"

namespace gptq::tokenizer {
namespace {

using json = nlohmann::json;

class ByteLevelDecoder final : public Decoder::Step {
 public:
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const auto& token : tokens) {
      std::string mapped;
      bool all_mapped = true;
      for (size_t pos = 0; pos < token.size() && all_mapped;) {
        int length;
        const auto byte = unicode::unicode_to_byte(unicode::decode_at(token, pos, &length));
        if (byte) mapped.push_back(static_cast<char>(*byte));
        all_mapped = byte.has_value();
        pos += length;
      }
      bytes += all_mapped ? mapped : token;  // a token outside the map passes through as is
    }
    return {unicode::from_utf8_lossy(bytes)};
  }
};

// Runs of <0xXX> tokens become their bytes if those form valid UTF-8, else one
// U+FFFD per byte.
class ByteFallbackDecoder final : public Decoder::Step {
 public:
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t n_pending = 0;
    auto flush = [&] {
      if (n_pending == 0) return;
      if (unicode::is_valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < n_pending; ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
      n_pending = 0;
    };
    for (auto& token : tokens) {
      if (const auto byte = parse_byte(token)) {
        pending.push_back(static_cast<char>(*byte));
        ++n_pending;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    return out;
  }

 private:
  static std::optional<uint8_t> parse_byte(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return std::nullopt;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int high = hex(token[3]), low = hex(token[4]);
    if (high < 0 || low < 0) return std::nullopt;
    return static_cast<uint8_t>(high * 16 + low);
  }
};

class FuseDecoder final : public Decoder::Step {
 public:
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    std::string joined;
    for (const auto& token : tokens) joined += token;
    return {joined};
  }
};

// Removes up to `start`/`stop` copies of `content` at each token's ends.
class StripDecoder final : public Decoder::Step {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    for (auto& token : tokens) {
      for (size_t k = 0; k < start_ && token.compare(0, content_.size(), content_) == 0; ++k)
        token.erase(0, content_.size());
      for (size_t k = 0; k < stop_ && token.size() >= content_.size() &&
                         token.compare(token.size() - content_.size(), content_.size(), content_) == 0;
           ++k)
        token.erase(token.size() - content_.size());
    }
    return tokens;
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder::Step {
 public:
  ReplaceDecoder(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    for (auto& token : tokens) {
      std::string out;
      size_t last = 0;
      for (const auto& [begin, end] : pattern_.find_all(token)) {
        out.append(token, last, begin - last);
        out += content_;
        last = end;
      }
      out.append(token, last, std::string::npos);
      token = std::move(out);
    }
    return tokens;
  }

 private:
  Regex pattern_;
  std::string content_;
};

class MetaspaceDecoder final : public Decoder::Step {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    for (size_t index = 0; index < tokens.size(); ++index) {
      std::string out;
      const std::string& token = tokens[index];
      // `tokenizers` drops every replacement in the first token, not only a leading one.
      const bool drop = index == 0 && strip_first_;
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          if (!drop) out += ' ';
          pos += replacement_.size();
        } else {
          out += token[pos++];
        }
      }
      tokens[index] = std::move(out);
    }
    return tokens;
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

}  // namespace

Decoder Decoder::from_json(const json& config) {
  Decoder decoder;
  if (!config.is_null()) {
    decoder.present_ = true;
    decoder.add(config);
  }
  return decoder;
}

void Decoder::add(const json& config) {
  const std::string type = config.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& step : config.at("decoders")) add(step);
  } else if (type == "ByteLevel") {
    steps_.push_back(std::make_shared<ByteLevelDecoder>());
  } else if (type == "ByteFallback") {
    steps_.push_back(std::make_shared<ByteFallbackDecoder>());
  } else if (type == "Fuse") {
    steps_.push_back(std::make_shared<FuseDecoder>());
  } else if (type == "Strip") {
    steps_.push_back(std::make_shared<StripDecoder>(config.at("content").get<std::string>(),
                                                    config.value("start", size_t{0}), config.value("stop", size_t{0})));
  } else if (type == "Replace") {
    steps_.push_back(std::make_shared<ReplaceDecoder>(regex_from_pattern_json(config.at("pattern")),
                                                      config.at("content").get<std::string>()));
  } else if (type == "Metaspace") {
    bool strip_first = config.value("add_prefix_space", true);
    if (config.contains("prepend_scheme")) strip_first = config.at("prepend_scheme").get<std::string>() != "never";
    steps_.push_back(std::make_shared<MetaspaceDecoder>(config.value("replacement", std::string("\xE2\x96\x81")),
                                                        strip_first));
  } else {
    GPTQ_CHECK_SUPPORTED(false, "tokenizer decoder '", type, "' is not supported");
  }
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
  if (!present_) {
    std::string joined;
    for (size_t index = 0; index < tokens.size(); ++index) {
      if (index) joined += ' ';
      joined += tokens[index];
    }
    return joined;
  }
  for (const auto& step : steps_) tokens = step->apply(std::move(tokens));
  std::string text;
  for (const auto& token : tokens) text += token;
  return text;
}

}  // namespace gptq::tokenizer
