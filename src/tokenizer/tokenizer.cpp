#include "gptq/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <fstream>

#include "gptq/tokenizer/added.h"
#include "gptq/tokenizer/bpe.h"
#include "gptq/tokenizer/decoder.h"
#include "gptq/tokenizer/normalizer.h"
#include "gptq/tokenizer/pretokenizer.h"
#include "gptq/tokenizer/unicode.h"
#include "gptq/core/error.h"

namespace gptq::tokenizer {
namespace {

using json = nlohmann::json;

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in, "cannot open '", path.string(), "'");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw InputError(detail::concat("'", path.string(), "' is not valid JSON: ", e.what()));
  }
}

// The special tokens the post-processor puts around a single sequence.
struct PostProcessor {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
};

void add_post_processor(const json& config, PostProcessor& post) {
  if (config.is_null()) return;
  const std::string type = config.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& step : config.at("processors")) add_post_processor(step, post);
  } else if (type == "ByteLevel") {
    // Only trims offsets; ids are unchanged.
  } else if (type == "TemplateProcessing") {
    post = {};
    const auto& specials = config.at("special_tokens");
    bool after_sequence = false;
    for (const auto& item : config.at("single")) {
      if (item.contains("Sequence")) {
        GPTQ_CHECK_SUPPORTED(!after_sequence, "TemplateProcessing with two sequences in 'single'");
        after_sequence = true;
        continue;
      }
      const auto name = item.at("SpecialToken").at("id").get<std::string>();
      GPTQ_CHECK(specials.contains(name), "TemplateProcessing names special token '", name, "' it does not define");
      auto& target = after_sequence ? post.suffix : post.prefix;
      for (const auto& id : specials.at(name).at("ids")) target.push_back(id.get<int32_t>());
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    post.prefix = {config.at("cls").at(1).get<int32_t>()};
    post.suffix = {config.at("sep").at(1).get<int32_t>()};
  } else {
    GPTQ_CHECK_SUPPORTED(false, "tokenizer post_processor '", type, "' is not supported");
  }
}

std::optional<std::string> config_token(const json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const auto& value = config.at(key);
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content")) return value.at("content").get<std::string>();
  return std::nullopt;
}

}  // namespace

struct Tokenizer::Impl {
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  BpeModel model;
  std::unique_ptr<AddedVocabulary> added;
  PostProcessor post;
  Decoder decoder;
  int64_t vocab_size = 0;
  std::optional<int32_t> bos_id, eos_id;

  std::optional<int32_t> token_to_id(std::string_view token) const {
    if (auto id = added->token_to_id(token)) return id;
    return model.token_to_id(token);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_model_dir(const std::filesystem::path& dir) {
  return from_file(dir / "tokenizer.json");
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json) {
  try {
    const json config = read_json(tokenizer_json);
    auto impl = std::make_unique<Impl>(Impl{
        Normalizer::from_json(config.value("normalizer", json())),
        PreTokenizer::from_json(config.value("pre_tokenizer", json())),
        BpeModel::from_json(config.at("model")),
        nullptr, {}, Decoder::from_json(config.value("decoder", json())), 0, std::nullopt, std::nullopt});

    std::vector<AddedToken> added;
    for (const auto& entry : config.value("added_tokens", json::array())) {
      added.push_back({entry.at("id").get<int32_t>(), entry.at("content").get<std::string>(),
                       entry.value("single_word", false), entry.value("lstrip", false), entry.value("rstrip", false),
                       entry.value("normalized", false), entry.value("special", false)});
    }
    const Normalizer& normalizer = impl->normalizer;
    auto normalize = [&normalizer](std::string_view text) { return normalizer.normalize(text); };
    impl->added = std::make_unique<AddedVocabulary>(std::move(added), normalize);
    add_post_processor(config.value("post_processor", json()), impl->post);

    impl->vocab_size = impl->model.vocab_size();
    for (const auto& token : impl->added->tokens()) impl->vocab_size = std::max<int64_t>(impl->vocab_size, token.id + 1);

    const auto config_path = tokenizer_json.parent_path() / "tokenizer_config.json";
    const json tokenizer_config = std::filesystem::exists(config_path) ? read_json(config_path) : json::object();
    if (const auto bos = config_token(tokenizer_config, "bos_token")) impl->bos_id = impl->token_to_id(*bos);
    if (const auto eos = config_token(tokenizer_config, "eos_token")) impl->eos_id = impl->token_to_id(*eos);
    // Without a config, the BOS is what the post-processor puts first.
    if (!impl->bos_id && !impl->post.prefix.empty()) impl->bos_id = impl->post.prefix.front();
    return Tokenizer(std::move(impl));
  } catch (const json::exception& e) {
    throw InputError(detail::concat("'", tokenizer_json.string(), "': unexpected tokenizer layout: ", e.what()));
  } catch (...) {
    rethrow_with_context(tokenizer_json.string());
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  GPTQ_CHECK(unicode::is_valid_utf8(text), "tokenizer input is not valid UTF-8");
  const Impl& impl = *impl_;
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = impl.post.prefix;
  const auto normalize = [&impl](std::string_view piece) { return impl.normalizer.normalize(piece); };
  for (const auto& piece : impl.added->split(text, normalize)) {
    if (piece.token_id) {
      ids.push_back(*piece.token_id);
      continue;
    }
    for (const auto& word : impl.pre_tokenizer.split(piece.text, piece.at_text_start))
      impl.model.encode_word(word, ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), impl.post.suffix.begin(), impl.post.suffix.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (const AddedToken* added = impl_->added->find_by_id(id)) {
      // As `tokenizers` 0.23: a normalized=true added token decodes from its
      // normalized content (Llama-2's '<s>' as '▁<s>', through the decoder
      // like any token), and skip_special_tokens compares that string with
      // the special contents, so such a token is skipped only when the
      // normalizer leaves it unchanged.
      std::string surface =
          added->normalized ? impl_->normalizer.normalize(added->content) : added->content;
      if (!added->special || surface != added->content) tokens.push_back(std::move(surface));
      continue;
    }
    const std::string& token = impl_->model.id_to_token(id);
    if (!token.empty()) tokens.push_back(token);
  }
  return impl_->decoder.decode(std::move(tokens));
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos_id; }
std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const { return impl_->token_to_id(token); }

}  // namespace gptq::tokenizer
