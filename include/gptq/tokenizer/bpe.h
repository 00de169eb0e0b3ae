#pragma once
// BpeModel: the "BPE" model of a tokenizer.json. A word (one pre-tokenized piece)
// starts as its characters (each looked up in the vocabulary; missing ones fall
// back to <0xXX> byte tokens when byte_fallback is set, else to unk_token, fused
// when fuse_unk), then the adjacent pair with the lowest merge rank is merged
// until none is left (ties: leftmost) -- `tokenizers`' priority-queue order over a
// linked list of symbols, O(n log n) per word. ignore_merges: a word that is
// itself in the vocabulary is emitted as is. Results of short words are cached.
#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gptq::tokenizer {

class BpeModel {
 public:
  // config: the "model" object. Throws UnsupportedError for dropout,
  // continuing_subword_prefix or end_of_word_suffix, InputError for merges that
  // name tokens outside the vocabulary.
  static BpeModel from_json(const nlohmann::json& config);
  // Appends the ids of `word` to `out`.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Largest id + 1.
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }
  // Token string of an id ("" for an id with no token).
  const std::string& id_to_token(int32_t id) const;

  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

 private:
  BpeModel();
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  void encode_uncached(std::string_view word, std::vector<int32_t>& out) const;
  void merge_all(std::vector<int32_t>& ids) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rank, merged id
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_ids_{};  // <0xXX> token ids, -1 where absent
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  struct Cache;
  std::unique_ptr<Cache> cache_;
};

}  // namespace gptq::tokenizer
