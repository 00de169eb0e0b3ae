#include "gptq/tokenizer/bpe.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <mutex>
#include <queue>

#include "gptq/tokenizer/unicode.h"
#include "gptq/core/error.h"

namespace gptq::tokenizer {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCacheEntries = 200000;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// One merge candidate: the pair starting at symbol `pos`. Lowest rank first,
// then leftmost, as `tokenizers`' Merge ordering.
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator>(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : pos > other.pos;
  }
};

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

std::pair<std::string, std::string> split_merge(const json& merge) {
  if (merge.is_array()) {
    GPTQ_CHECK(merge.size() == 2, "tokenizer merge is not a pair: ", merge.dump());
    return {merge[0].get<std::string>(), merge[1].get<std::string>()};
  }
  const auto text = merge.get<std::string>();
  const size_t space = text.find(' ');
  GPTQ_CHECK(space != std::string::npos && text.find(' ', space + 1) == std::string::npos,
             "tokenizer merge '", text, "' is not two space-separated tokens");
  return {text.substr(0, space), text.substr(space + 1)};
}

}  // namespace

struct BpeModel::Cache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};

BpeModel::BpeModel() : cache_(std::make_unique<Cache>()) {}
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

BpeModel BpeModel::from_json(const json& config) {
  GPTQ_CHECK_SUPPORTED(config.value("type", std::string("BPE")) == "BPE", "tokenizer model '",
                       config.value("type", std::string()), "' is not supported (only BPE)");
  auto null_or_empty = [&](const char* key) {
    return !config.contains(key) || config[key].is_null() || (config[key].is_string() && config[key].get<std::string>().empty());
  };
  GPTQ_CHECK_SUPPORTED(null_or_empty("dropout"), "BPE dropout is not supported");
  GPTQ_CHECK_SUPPORTED(null_or_empty("continuing_subword_prefix"), "BPE continuing_subword_prefix is not supported");
  GPTQ_CHECK_SUPPORTED(null_or_empty("end_of_word_suffix"), "BPE end_of_word_suffix is not supported");

  BpeModel model;
  int32_t max_id = -1;
  for (const auto& [token, id] : config.at("vocab").items()) {
    model.vocab_.emplace(token, id.get<int32_t>());
    max_id = std::max(max_id, id.get<int32_t>());
  }
  model.id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : model.vocab_) model.id_to_token_[id] = token;

  const auto& merges = config.at("merges");
  model.merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto [left, right] = split_merge(merges[rank]);
    const auto left_id = model.token_to_id(left), right_id = model.token_to_id(right);
    const auto merged_id = model.token_to_id(left + right);
    GPTQ_CHECK(left_id && right_id && merged_id, "tokenizer merge '", left, " ", right,
               "' uses a token missing from the vocabulary");
    // A repeated pair keeps its first (lowest) rank.
    model.merges_.try_emplace(pair_key(*left_id, *right_id), Merge{static_cast<int32_t>(rank), *merged_id});
  }

  if (config.contains("unk_token") && config["unk_token"].is_string()) {
    model.unk_id_ = model.token_to_id(config["unk_token"].get<std::string>());
  }
  model.byte_fallback_ = config.value("byte_fallback", false);
  model.fuse_unk_ = config.value("fuse_unk", false);
  model.ignore_merges_ = config.value("ignore_merges", false);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    model.byte_ids_[b] = model.token_to_id(name).value_or(-1);
  }
  return model;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string& BpeModel::id_to_token(int32_t id) const {
  static const std::string kEmpty;
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return kEmpty;
  return id_to_token_[id];
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > kMaxCachedWordBytes) {
    encode_uncached(word, out);
    return;
  }
  std::string key(word);
  {
    std::lock_guard lock(cache_->mutex);
    const auto it = cache_->words.find(key);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  encode_uncached(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard lock(cache_->mutex);
  if (cache_->words.size() >= kMaxCacheEntries) cache_->words.clear();
  cache_->words.emplace(std::move(key), std::move(ids));
}

void BpeModel::encode_uncached(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  // Initial symbols, mirroring `tokenizers`' BPE::merge_word: a pending unk is
  // flushed before the next known character (but not before byte-fallback tokens).
  std::vector<int32_t> ids;
  std::optional<int32_t> pending_unk;
  size_t pos = 0;
  while (pos < word.size()) {
    const int length = std::min<int>(unicode::utf8_length(static_cast<unsigned char>(word[pos])),
                                     static_cast<int>(word.size() - pos));
    const std::string_view character = word.substr(pos, length);
    pos += length;
    if (const auto id = token_to_id(character)) {
      if (pending_unk) ids.push_back(*std::exchange(pending_unk, std::nullopt));
      ids.push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (const char c : character) all_bytes = all_bytes && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all_bytes) {
        for (const char c : character) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (!unk_id_) continue;  // no unk token: the character is dropped, as in `tokenizers`
    if (pending_unk && !fuse_unk_) ids.push_back(*pending_unk);
    pending_unk = *unk_id_;
  }
  if (pending_unk) ids.push_back(*pending_unk);
  merge_all(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

void BpeModel::merge_all(std::vector<int32_t>& ids) const {
  const auto n_symbols = static_cast<int32_t>(ids.size());
  if (n_symbols < 2) return;
  std::vector<Symbol> symbols(n_symbols);
  for (int32_t index = 0; index < n_symbols; ++index)
    symbols[index] = {ids[index], index - 1, index + 1 < n_symbols ? index + 1 : -1, true};

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push_pair = [&](int32_t left_pos) {
    const int32_t right_pos = symbols[left_pos].next;
    if (right_pos < 0) return;
    const auto it = merges_.find(pair_key(symbols[left_pos].id, symbols[right_pos].id));
    if (it != merges_.end()) queue.push({it->second.rank, left_pos, it->second.new_id});
  };
  for (int32_t index = 0; index + 1 < n_symbols; ++index) push_pair(index);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Stale entry: the pair at this position changed since it was queued.
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  ids.clear();
  for (const auto& symbol : symbols)
    if (symbol.alive) ids.push_back(symbol.id);
}

}  // namespace gptq::tokenizer
