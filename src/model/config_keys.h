#pragma once
// Typed, checked reads of one config.json object (private to model/): every
// error is an InputError naming the key and the file.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace gptq::model::detail {

class Keys {
 public:
  // `object` must outlive the Keys; `source` names it in errors
  // ("/models/x/config.json", or "... (rope_parameters)" for a nested object).
  Keys(const nlohmann::json& object, std::string source);

  // The key is present and not null.
  bool has(const std::string& key) const;
  // The key is in the file, null or not.
  bool written(const std::string& key) const;
  // The value; InputError when absent or null.
  const nlohmann::json& raw(const std::string& key) const;
  int64_t integer(const std::string& key) const;
  int64_t positive(const std::string& key) const;
  int64_t positive_or(const std::string& key, int64_t fallback) const;
  double number(const std::string& key) const;
  double number_or(const std::string& key, double fallback) const;
  bool boolean_or(const std::string& key, bool fallback) const;
  std::string string_or(const std::string& key, const std::string& fallback) const;
  // The integer, or nullopt when absent, null or not an integer (token ids).
  std::optional<int64_t> optional_integer(const std::string& key) const;
  // A positive number, or 0 when `key` is empty (the family has no such key)
  // or absent or null.
  double optional_positive(const std::string& key) const;
  const std::string& source() const { return source_; }

 private:
  const nlohmann::json& object_;
  std::string source_;
};

}  // namespace gptq::model::detail
