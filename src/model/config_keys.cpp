// Typed reads of a config.json object (see config_keys.h).
#include "model/config_keys.h"

#include <utility>

#include "gptq/core/error.h"

namespace gptq::model::detail {

using nlohmann::json;

Keys::Keys(const json& object, std::string source) : object_(object), source_(std::move(source)) {}

bool Keys::has(const std::string& key) const { return object_.contains(key) && !object_.at(key).is_null(); }

bool Keys::written(const std::string& key) const { return object_.contains(key); }

const json& Keys::raw(const std::string& key) const {
  GPTQ_CHECK(has(key), source_, ": missing required key '", key, "'");
  return object_.at(key);
}

int64_t Keys::integer(const std::string& key) const {
  const json& value = raw(key);
  GPTQ_CHECK(value.is_number_integer(), source_, ": key '", key, "' must be an integer, got ", value.dump());
  return value.get<int64_t>();
}

int64_t Keys::positive(const std::string& key) const {
  int64_t value = integer(key);
  GPTQ_CHECK(value > 0, source_, ": key '", key, "' must be positive, got ", value);
  return value;
}

int64_t Keys::positive_or(const std::string& key, int64_t fallback) const {
  return has(key) ? positive(key) : fallback;
}

double Keys::number(const std::string& key) const {
  const json& value = raw(key);
  GPTQ_CHECK(value.is_number(), source_, ": key '", key, "' must be a number, got ", value.dump());
  return value.get<double>();
}

double Keys::number_or(const std::string& key, double fallback) const { return has(key) ? number(key) : fallback; }

bool Keys::boolean_or(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const json& value = object_.at(key);
  GPTQ_CHECK(value.is_boolean(), source_, ": key '", key, "' must be true or false, got ", value.dump());
  return value.get<bool>();
}

std::string Keys::string_or(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const json& value = object_.at(key);
  GPTQ_CHECK(value.is_string(), source_, ": key '", key, "' must be a string, got ", value.dump());
  return value.get<std::string>();
}

std::optional<int64_t> Keys::optional_integer(const std::string& key) const {
  if (!has(key) || !object_.at(key).is_number_integer()) return std::nullopt;
  return object_.at(key).get<int64_t>();
}

double Keys::optional_positive(const std::string& key) const {
  if (key.empty() || !has(key)) return 0;
  const double value = number(key);
  GPTQ_CHECK(value > 0, source_, ": key '", key, "' must be positive or null, got ", value);
  return value;
}

}  // namespace gptq::model::detail
