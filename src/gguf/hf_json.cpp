#include "gguf/hf_json.h"

#include <fstream>

#include "gptq/core/error.h"
#include "gptq/io/json.h"

namespace gptq::gguf {

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in, "'", path.string(), "': cannot open");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  GPTQ_CHECK(size >= 0 && static_cast<uint64_t>(size) <= kMaxHfJsonBytes, "'", path.string(),
             "': cannot read it or larger than ", kMaxHfJsonBytes, " bytes");
  std::string text(static_cast<size_t>(size), '\0');
  in.seekg(0);
  in.read(text.data(), size);
  GPTQ_CHECK(in.gcount() == size, "'", path.string(), "': short read");
  return text;
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  return io::parse_json_strict(read_text_file(path), gptq::detail::concat("'", path.string(), "'"));
}

bool is_file(const std::filesystem::path& path) {
  std::error_code error;
  return std::filesystem::is_regular_file(path, error);
}

nlohmann::json read_json_file_if_present(const std::filesystem::path& path) {
  if (!is_file(path)) return nullptr;
  return read_json_file(path);
}

bool truthy(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null: return false;
    case nlohmann::json::value_t::boolean: return value.get<bool>();
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return value.get<int64_t>() != 0;
    case nlohmann::json::value_t::number_float: return value.get<double>() != 0.0;
    case nlohmann::json::value_t::string: return !value.get_ref<const std::string&>().empty();
    default: return !value.empty();
  }
}

const nlohmann::json& member(const nlohmann::json& value, const char* key) {
  static const nlohmann::json kNull = nullptr;
  if (!value.is_object()) return kNull;
  const auto found = value.find(key);
  return found == value.end() ? kNull : *found;
}

}  // namespace gptq::gguf
