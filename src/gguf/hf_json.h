#pragma once
// Reading the JSON files of a Hugging Face model directory (config.json,
// tokenizer.json, tokenizer_config.json, ...) for the GGUF vocabulary: strict
// parsing with errors that name the file, and Python's truthiness for the
// converter's `if value:` tests.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace gptq::gguf {

inline constexpr size_t kMaxHfJsonBytes = size_t{1} << 30;

// The parsed file; InputError naming it when unreadable, larger than
// kMaxHfJsonBytes or not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& path);

// The parsed file, or null when it does not exist.
nlohmann::json read_json_file_if_present(const std::filesystem::path& path);

// The file's bytes; InputError naming it when unreadable or too large.
std::string read_text_file(const std::filesystem::path& path);

// os.path.isfile: false (not an error) for a missing or unreadable path.
bool is_file(const std::filesystem::path& path);

// Python's bool(value) for a JSON value: null, false, 0, "", [] and {} are false.
bool truthy(const nlohmann::json& value);

// value.get(key) of a Python dict: null when `value` is not an object or lacks the key.
const nlohmann::json& member(const nlohmann::json& value, const char* key);

}  // namespace gptq::gguf
