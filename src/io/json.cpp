#include "gptq/io/json.h"

#include <cstdio>
#include <set>
#include <vector>

#include "gptq/core/error.h"

namespace gptq::io {
namespace {

// nlohmann's parse error quotes the whole token it was reading ("last read:
// '...'"), which for a long string or a run of whitespace is as long as the
// input; the position and the reason come first, so cut after them.
constexpr size_t kMaxParseMessageChars = 256;

std::string short_parse_message(std::string message) {
  if (auto eol = message.find('\n'); eol != std::string::npos) message.resize(eol);
  if (message.size() <= kMaxParseMessageChars) return message;
  size_t cut = kMaxParseMessageChars;
  // Back off UTF-8 continuation bytes so no character is split.
  while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xc0) == 0x80) --cut;
  message.resize(cut);
  return message + "...";
}

}  // namespace

std::string quote_for_error(std::string_view text, size_t max_chars) {
  std::string out = "'";
  for (size_t char_idx = 0; char_idx < text.size(); ++char_idx) {
    if (char_idx == max_chars) {
      out += "...";
      break;
    }
    const auto byte = static_cast<unsigned char>(text[char_idx]);
    if (byte == '\n') {
      out += "\\n";
    } else if (byte < 0x20 || byte == 0x7f) {
      char buffer[8];
      std::snprintf(buffer, sizeof(buffer), "\\x%02x", byte);
      out += buffer;
    } else {
      out += static_cast<char>(byte);
    }
  }
  return out + "'";
}

nlohmann::json parse_json_strict(std::string_view text, const std::string& what, int max_depth) {
  // One key set per open object; arrays push an empty marker so pops match.
  std::vector<std::set<std::string>> open_objects;
  std::vector<bool> is_object;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    switch (event) {
      case Event::object_start:
      case Event::array_start:
        GPTQ_CHECK(depth < max_depth, what, ": JSON nested deeper than ", max_depth, " levels");
        is_object.push_back(event == Event::object_start);
        if (event == Event::object_start) open_objects.emplace_back();
        break;
      case Event::object_end:
      case Event::array_end:
        if (!is_object.empty()) {
          if (is_object.back()) open_objects.pop_back();
          is_object.pop_back();
        }
        break;
      case Event::key: {
        GPTQ_ASSERT(!open_objects.empty());
        const auto& key = parsed.get_ref<const std::string&>();
        GPTQ_CHECK(open_objects.back().insert(key).second, what, ": duplicate JSON key ",
                   quote_for_error(key));
        break;
      }
      case Event::value:
        break;
    }
    return true;
  };
  nlohmann::json result = nlohmann::json::parse(text.begin(), text.end(), on_event,
                                                /*allow_exceptions=*/false);
  if (result.is_discarded()) {
    // Re-parse without the callback only to get nlohmann's position message.
    try {
      nlohmann::json ignored = nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::exception& e) {
      throw InputError(what + ": invalid JSON: " + short_parse_message(e.what()));
    }
    throw InputError(what + ": invalid JSON");
  }
  return result;
}

}  // namespace gptq::io
