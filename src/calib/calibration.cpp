#include "gptq/calib/calibration.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "gptq/core/error.h"

namespace gptq::calib {
namespace {

std::string read_all(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  GPTQ_CHECK(in.good(), "cannot read calibration file '", file.string(), "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string_view trim(std::string_view text) {
  size_t begin = 0, end = text.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  return text.substr(begin, end - begin);
}

// Every whitespace-separated token an integer: a pre-tokenized stream.
bool parse_whitespace_ints(std::string_view text, std::vector<int32_t>& ids) {
  size_t pos = 0;
  while (pos < text.size()) {
    while (pos < text.size() && std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
    if (pos == text.size()) break;
    size_t end = pos;
    while (end < text.size() && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
    for (size_t i = pos; i < end; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
    }
    if (end - pos > 9) return false;
    ids.push_back(static_cast<int32_t>(std::stol(std::string(text.substr(pos, end - pos)))));
    pos = end;
  }
  return !ids.empty();
}

int32_t as_token_id(const nlohmann::json& value, const std::filesystem::path& file) {
  GPTQ_CHECK(value.is_number_integer() && value.get<int64_t>() >= 0 &&
                 value.get<int64_t>() <= INT32_MAX,
             "'", file.string(), "': token ids must be non-negative integers, got ", value.dump());
  return value.get<int32_t>();
}

// Ready windows set their own count and length; n_samples and seqlen only cap them.
at::Tensor ready_windows(const nlohmann::json& rows, int n_samples, int seqlen,
                         const std::filesystem::path& file) {
  auto length_of = [&](int64_t row_idx) {
    const auto row = static_cast<size_t>(row_idx);
    GPTQ_CHECK(rows[row].is_array(), "'", file.string(), "': window ", row, " is not a list of token ids");
    return std::min<int64_t>(static_cast<int64_t>(rows[row].size()), seqlen);
  };
  const int64_t n_rows = std::min<int64_t>(static_cast<int64_t>(rows.size()), n_samples);
  const int64_t length = length_of(0);
  GPTQ_CHECK(length >= 2, "'", file.string(), "': window 0 has ", rows[0].size(),
             " token(s); a calibration window needs at least 2");
  auto ids = at::empty({n_rows, length}, at::kLong);
  auto accessor = ids.accessor<int64_t, 2>();
  for (int64_t row = 0; row < n_rows; ++row) {
    const auto& window = rows[static_cast<size_t>(row)];
    // Unequal windows would need padding and a mask, which GPTQ's Hessians do not take.
    GPTQ_CHECK(length_of(row) == length, "'", file.string(), "': window ", row, " has ", window.size(),
               " tokens, window 0 has ", rows[0].size(), "; ready windows must all be the same length (or give "
               "--seqlen at most the shortest to cut them all to it)");
    for (int64_t col = 0; col < length; ++col) {
      accessor[row][col] = as_token_id(window[static_cast<size_t>(col)], file);
    }
  }
  return ids;
}

// JSONL: every non-empty line an object with a string "text".
bool parse_jsonl(std::string_view content, std::string& joined) {
  std::istringstream lines{std::string(content)};
  std::string line;
  bool any = false;
  while (std::getline(lines, line)) {
    if (trim(line).empty()) continue;
    auto object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!object.is_object() || !object.contains("text") || !object["text"].is_string()) {
      return false;
    }
    if (any) joined += "\n\n";
    joined += object["text"].get<std::string>();
    any = true;
  }
  return any;
}

}  // namespace

at::Tensor sample_windows(const std::vector<int32_t>& tokens, int n_samples, int seqlen,
                          uint64_t seed, const std::string& source) {
  GPTQ_CHECK(n_samples > 0, "--nsamples must be positive, got ", n_samples);
  GPTQ_CHECK(seqlen > 0, "--seqlen must be positive, got ", seqlen);
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  GPTQ_CHECK(n_tokens > seqlen, source, " has ", n_tokens,
             " tokens, too short for one window of --seqlen ", seqlen,
             " (give a longer file or a smaller --seqlen)");
  std::mt19937_64 generator(seed);
  const uint64_t n_starts = static_cast<uint64_t>(n_tokens - seqlen);
  auto ids = at::empty({n_samples, seqlen}, at::kLong);
  auto accessor = ids.accessor<int64_t, 2>();
  for (int row = 0; row < n_samples; ++row) {
    const int64_t start = static_cast<int64_t>(generator() % n_starts);
    for (int col = 0; col < seqlen; ++col) accessor[row][col] = tokens[start + col];
  }
  return ids;
}

CalibrationWindows load_calibration(const std::filesystem::path& file, const EncodeFn& encode,
                                    int n_samples, int seqlen, uint64_t seed) {
  const std::string content = read_all(file);
  const std::string_view body = trim(content);
  GPTQ_CHECK(!body.empty(), "calibration file '", file.string(), "' is empty");
  const std::string source = "calibration file '" + file.string() + "'";

  if (body.front() == '[') {
    auto parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    GPTQ_CHECK(!parsed.is_discarded() && parsed.is_array() && !parsed.empty(), source,
               " starts with '[' but is not a non-empty JSON list of token ids");
    if (parsed.front().is_array()) {
      return {ready_windows(parsed, n_samples, seqlen, file), 0, "windows"};
    }
    std::vector<int32_t> ids;
    ids.reserve(parsed.size());
    for (const auto& value : parsed) ids.push_back(as_token_id(value, file));
    return {sample_windows(ids, n_samples, seqlen, seed, source),
            static_cast<int64_t>(ids.size()), "ids"};
  }
  std::vector<int32_t> ids;
  if (parse_whitespace_ints(body, ids)) {
    return {sample_windows(ids, n_samples, seqlen, seed, source),
            static_cast<int64_t>(ids.size()), "ids"};
  }
  std::string text;
  std::string format = "text";
  if (body.front() == '{' && parse_jsonl(body, text)) {
    format = "jsonl";
  } else {
    text = content;
  }
  GPTQ_CHECK(static_cast<bool>(encode), source, " is text but no tokenizer was given");
  ids = encode(text);
  return {sample_windows(ids, n_samples, seqlen, seed, source),
          static_cast<int64_t>(ids.size()), format};
}

}  // namespace gptq::calib
