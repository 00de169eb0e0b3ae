#include "gguf/special_vocab.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <limits>

#include "gguf/hf_json.h"
#include "gptq/core/error.h"

namespace gptq::gguf {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Python's open(path, encoding="utf-8").read(): universal newlines.
std::string read_text_universal_newlines(const fs::path& path) {
  const std::string raw = read_text_file(path);
  std::string text;
  text.reserve(raw.size());
  for (size_t index = 0; index < raw.size(); ++index) {
    if (raw[index] != '\r') {
      text.push_back(raw[index]);
      continue;
    }
    text.push_back('\n');
    if (index + 1 < raw.size() && raw[index + 1] == '\n') ++index;
  }
  return text;
}

// The token name of a TemplateProcessing entry ({"SpecialToken": {"id": "<s>"}}), or null.
const json& template_special(const json& entry) { return member(member(entry, "SpecialToken"), "id"); }

bool one_of(const json& value, const json& first, const json& second) { return value == first || value == second; }

// One pass of gguf-py's SpecialVocab._load over a model directory. The
// special_* members mirror the locals of _try_load_from_tokenizer_json (a
// string, an AddedToken dict or null) and tokenizer_config_ is edited in place
// as gguf-py edits its dict, since later steps read the edits back.
class Loader {
 public:
  Loader(fs::path dir, bool load_merges, std::optional<int64_t> n_vocab)
      : dir_(std::move(dir)), load_merges_(load_merges), n_vocab_(n_vocab) {}

  SpecialVocab run() {
    load_tokenizer_files();
    load_config_json();
    if (load_merges_ && out_.merges.empty()) load_merges_txt();
    return std::move(out_);
  }

 private:
  void load_tokenizer_files() {
    const fs::path tokenizer_path = dir_ / "tokenizer.json";
    const json tokenizer = read_json_file_if_present(tokenizer_path);
    json added_tokens = json::array();
    if (!tokenizer.is_null()) {
      if (load_merges_) load_json_merges(member(member(tokenizer, "model"), "merges"), tokenizer_path);
      if (const json& normalizer = member(tokenizer, "normalizer"); truthy(normalizer)) parse_normalizer(normalizer);
      if (const json& added = member(tokenizer, "added_tokens"); added.is_array()) added_tokens = added;
    }
    config_path_ = dir_ / "tokenizer_config.json";
    config_ = read_json_file_if_present(config_path_);
    GPTQ_CHECK(config_.is_null() || config_.is_object(), "'", config_path_.string(), "': not a JSON object");
    if (truthy(tokenizer)) read_post_processor(tokenizer);
    if (!truthy(config_)) return;
    load_chat_template();
    read_config_entries(added_tokens);
  }

  void load_json_merges(const json& merges, const fs::path& path) {
    if (!merges.is_array() || merges.empty()) return;
    const bool pairs = merges[0].is_array() && merges[0].size() == 2 && merges[0][0].is_string();
    GPTQ_CHECK(merges[0].is_string() || pairs, "'", path.string(), "': unknown tokenizer merges format");
    out_.merges.reserve(merges.size());
    for (const json& merge : merges) {
      if (!pairs) {
        GPTQ_CHECK(merge.is_string(), "'", path.string(), "': a merge is not a string");
        out_.merges.push_back(merge.get<std::string>());
        continue;
      }
      GPTQ_CHECK(merge.is_array(), "'", path.string(), "': a merge is not a pair of strings");
      // gguf keeps merges as "left right"; a space inside a part becomes U+0120
      // ("\xc4\xa0", the byte-level alphabet's space), as gguf-py encodes it.
      std::string joined;
      for (size_t part_idx = 0; part_idx < merge.size(); ++part_idx) {
        GPTQ_CHECK(merge[part_idx].is_string(), "'", path.string(), "': a merge is not a pair of strings");
        if (part_idx > 0) joined.push_back(' ');
        for (const char c : merge[part_idx].get_ref<const std::string&>()) {
          if (c == ' ') joined += "\xc4\xa0";
          else joined.push_back(c);
        }
      }
      out_.merges.push_back(std::move(joined));
    }
  }

  void parse_normalizer(const json& normalizer) {
    const json& type = member(normalizer, "type");
    if (type == "Lowercase") {
      out_.normalizer_lowercase = true;
    } else if (type == "StripAccents") {
      out_.normalizer_strip_accents = true;
    } else if (type == "BertNormalizer") {
      if (normalizer.contains("lowercase")) out_.normalizer_lowercase = truthy(normalizer["lowercase"]);
      if (normalizer.contains("strip_accents")) out_.normalizer_strip_accents = truthy(normalizer["strip_accents"]);
    } else if (type == "Sequence") {
      if (const json& list = member(normalizer, "normalizers"); list.is_array()) {
        for (const json& item : list) parse_normalizer(item);
      }
    }
  }

  json config_get(const char* key) const { return member(config_, key); }

  void read_post_processor(const json& tokenizer) {
    special_bos_ = config_get("bos_token");
    special_cls_ = config_get("cls_token");
    special_eos_ = config_get("eos_token");
    special_sep_ = config_get("sep_token");
    if (!truthy(special_bos_) && truthy(special_cls_) && truthy(config_)) config_["bos_token"] = special_bos_ = special_cls_;
    if (!truthy(special_eos_) && truthy(special_sep_) && truthy(config_)) config_["eos_token"] = special_eos_ = special_sep_;
    const json& post_processor = member(tokenizer, "post_processor");
    if (!truthy(post_processor)) return;
    const json& listed = member(post_processor, "processors");
    const json processors = listed.is_null() ? json::array({post_processor}) : listed;
    if (!processors.is_array()) return;
    for (const json& processor : processors) {
      const json& type = member(processor, "type");
      if (type == "ByteLevel") {
        out_.add_tokens.emplace("bos", false);
        out_.add_tokens.emplace("eos", false);
      } else if (type == "RobertaProcessing") {
        roberta_processing(processor);
      } else if (type == "TemplateProcessing") {
        template_processing(processor);
      }
    }
  }

  void roberta_processing(const json& processor) {
    out_.add_tokens["bos"] = out_.add_tokens["eos"] = out_.add_tokens["sep"] = true;
    const auto first_or = [&](const char* key, const json& fallback) {
      const json& value = member(processor, key);
      return value.is_array() && !value.empty() ? value[0] : fallback;
    };
    if (!truthy(special_cls_) && truthy(config_)) config_["cls_token"] = special_cls_ = first_or("cls", special_bos_);
    if (!truthy(special_sep_) && truthy(config_)) config_["sep_token"] = special_sep_ = first_or("sep", special_eos_);
  }

  // gguf-py's "crude parsing of TemplateProcessing": a leading special token
  // means add_bos, a trailing one add_eos, one between A and B add_sep.
  void template_processing(const json& processor) {
    const json single = member(processor, "single").is_array() ? processor["single"] : json::array();
    json pair = member(processor, "pair").is_array() ? processor["pair"] : json::array();
    json special_first = nullptr, special_last = nullptr;
    if (single.size() > 1) {
      special_first = template_special(single.front());
      if (truthy(special_first)) {
        if (!truthy(config_)) {
          special_bos_ = special_first;
        } else if (!one_of(special_first, special_bos_, special_cls_)) {
          if (!truthy(special_bos_)) config_["bos_token"] = special_bos_ = special_first;
          if (!truthy(special_cls_)) config_["cls_token"] = special_cls_ = special_first;
        }
        out_.add_tokens["bos"] = one_of(special_first, special_bos_, special_cls_);
      }
      special_last = template_special(single.back());
      if (truthy(special_last)) {
        if (!truthy(config_)) {
          special_eos_ = special_last;
        } else if (special_last != special_eos_) {
          // The old eos becomes eot (or eom) and the trailing token the new eos.
          if (std::find(types_.begin(), types_.end(), "eot") == types_.end()) {
            types_.push_back("eot");
            config_["eot_token"] = special_eos_;
          } else if (std::find(types_.begin(), types_.end(), "eom") == types_.end()) {
            types_.push_back("eom");
            config_["eom_token"] = special_eos_;
          }
          config_["eos_token"] = special_eos_ = special_last;
        }
        out_.add_tokens["eos"] = special_last == special_eos_;
      }
    }
    if (pair.empty()) return;
    const size_t seq_start = truthy(special_first) && template_special(pair.front()) == special_first ? 1 : 0;
    const size_t seq_stop = truthy(special_last) && template_special(pair.back()) == special_last ? pair.size() - 1 : pair.size();
    if (seq_start >= seq_stop) return;
    const json middle(pair.begin() + static_cast<std::ptrdiff_t>(seq_start), pair.begin() + static_cast<std::ptrdiff_t>(seq_stop));
    const json& seq_a = member(member(middle.front(), "Sequence"), "id");
    const json& seq_b = member(member(middle.back(), "Sequence"), "id");
    if (seq_a != "A" || seq_b != "B" || middle.size() <= 2) return;
    const json between(middle.begin() + 1, middle.end() - 1);
    bool add_sep = false;
    const json& first_entry = template_special(between[0]);
    if (truthy(first_entry) && one_of(first_entry, special_sep_, special_eos_) && !truthy(special_last)) add_sep = true;
    if (between.size() == 2) {
      const json& second_entry = template_special(between[1]);
      if (truthy(second_entry) && one_of(second_entry, special_sep_, special_eos_)) add_sep = true;
    }
    out_.add_tokens["sep"] = add_sep;
    if (add_sep && !truthy(special_sep_) && truthy(config_)) config_["sep_token"] = special_eos_;
  }

  void load_chat_template() {
    json alternative = nullptr;
    const fs::path jinja = dir_ / "chat_template.jinja";
    const fs::path json_file = dir_ / "chat_template.json";
    if (is_file(jinja)) {
      alternative = read_text_universal_newlines(jinja);
      std::vector<fs::path> extra;
      std::error_code error;
      for (fs::directory_iterator it(dir_ / "additional_chat_templates", error), end; !error && it != end; it.increment(error)) {
        if (it->path().extension() == ".jinja" && is_file(it->path())) extra.push_back(it->path());
      }
      if (!extra.empty()) {
        json list = json::array({{{"name", "default"}, {"template", alternative}}});
        for (const fs::path& path : extra) {
          list.push_back({{"name", path.stem().string()}, {"template", read_text_universal_newlines(path)}});
        }
        alternative = list;
      }
    } else if (is_file(json_file)) {
      alternative = member(read_json_file(json_file), "chat_template");
    }
    const json chat_template = config_.contains("chat_template") ? config_["chat_template"] : alternative;
    if (chat_template.is_string()) {
      out_.chat_template = chat_template.get<std::string>();
    } else if (chat_template.is_array()) {
      set_template_list(chat_template);
    }
  }

  // GGUFWriter.add_chat_template for a list of {name, template}.
  void set_template_list(const json& list) {
    std::map<std::string, std::string> named;
    for (const json& choice : list) {
      const json& name_value = member(choice, "name");
      const json& text = member(choice, "template");
      std::string name = name_value.is_string() ? name_value.get<std::string>() : "";
      for (char& c : name) {
        const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum) c = '_';
      }
      if (name.empty() || text.is_null()) continue;
      GPTQ_CHECK(text.is_string(), "'", config_path_.string(), "': chat template '", name, "' is not a string");
      if (name == "default") out_.chat_template = text.get<std::string>();
      else named[name] = text.get<std::string>();
    }
    out_.named_chat_templates.assign(named.begin(), named.end());
  }

  void read_config_entries(const json& added_tokens) {
    for (const std::string& type : types_) {
      const json& add_entry = config_get(("add_" + type + "_token").c_str());
      if (add_entry.is_boolean()) out_.add_tokens.emplace(type, add_entry.get<bool>());
      const json& entry = config_get((type + "_token").c_str());
      const json& content = entry.is_object() ? member(entry, "content") : entry;
      if (!content.is_string()) continue;
      for (const json& token : added_tokens) {
        if (member(token, "content") == content) {
          set_special(type, member(token, "id"), config_path_);
          break;
        }
      }
    }
  }

  void load_config_json() {
    const fs::path path = dir_ / "config.json";
    const json config = read_json_file_if_present(path);
    if (config.is_null()) return;
    for (const std::string& type : types_) {
      const std::string key = type + "_token_id";
      json id = member(config, key.c_str());
      if (id.is_null() && config.contains("text_config")) id = member(config["text_config"], key.c_str());
      set_special(type, id, path);
    }
  }

  void set_special(const std::string& type, const json& id, const fs::path& source) {
    if (!id.is_number_integer()) return;
    const int64_t value = id.get<int64_t>();
    GPTQ_CHECK(value >= 0, "'", source.string(), "': invalid value for special token type ", type, ": ", value);
    GPTQ_CHECK(value <= std::numeric_limits<uint32_t>::max(), "'", source.string(), "': ", type, " token id ", value,
               " does not fit GGUF's uint32");
    if (n_vocab_ && value >= *n_vocab_) return;
    out_.ids.emplace(type, static_cast<uint32_t>(value));
  }

  void load_merges_txt() {
    const fs::path path = dir_ / "merges.txt";
    if (!is_file(path)) return;
    const std::string text = read_text_universal_newlines(path);
    size_t line_start = 0;
    bool first = true;
    while (line_start < text.size()) {
      size_t line_end = text.find('\n', line_start);
      if (line_end == std::string::npos) line_end = text.size();
      std::string_view line(text.data() + line_start, line_end - line_start);
      line_start = line_end + 1;
      const auto parts = split_whitespace(line);
      // A "#version" first line is a header, not a merge.
      if (first && !parts.empty() && parts[0].front() == '#') {
        first = false;
        continue;
      }
      first = false;
      if (parts.size() == 2) out_.merges.push_back(std::string(parts[0]) + " " + std::string(parts[1]));
    }
  }

  // Python's str.split() over ASCII whitespace (merges are byte-level text, so
  // no Unicode space appears unencoded).
  static std::vector<std::string_view> split_whitespace(std::string_view line) {
    std::vector<std::string_view> parts;
    size_t pos = 0;
    const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
    while (pos < line.size()) {
      while (pos < line.size() && is_space(line[pos])) ++pos;
      const size_t start = pos;
      while (pos < line.size() && !is_space(line[pos])) ++pos;
      if (pos > start) parts.push_back(line.substr(start, pos - start));
    }
    return parts;
  }

  fs::path dir_;
  bool load_merges_;
  std::optional<int64_t> n_vocab_;
  SpecialVocab out_;
  std::vector<std::string> types_{"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
  fs::path config_path_;
  json config_;
  json special_bos_, special_cls_, special_eos_, special_sep_;
};

}  // namespace

SpecialVocab load_special_vocab(const std::filesystem::path& model_dir, bool load_merges,
                                std::optional<int64_t> n_vocab) {
  return Loader(model_dir, load_merges, n_vocab).run();
}

}  // namespace gptq::gguf
