#pragma once
// Helpers for the io tests: a scratch directory removed on destruction, raw
// file writing, and "this throws InputError naming that file".
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "gptq/core/error.h"

namespace gptq::io::testing {

class ScratchDir {
 public:
  ScratchDir() {
    std::random_device seed;
    path_ = std::filesystem::temp_directory_path() /
            ("gptq_io_test_" + std::to_string(seed()) + std::to_string(seed()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// u64 little-endian header length | header | data, built by hand.
inline std::string safetensors_bytes(const std::string& header, const std::string& data,
                                     std::optional<uint64_t> declared_length = std::nullopt) {
  const uint64_t length = declared_length.value_or(header.size());
  std::string bytes(8, '\0');
  for (int byte_idx = 0; byte_idx < 8; ++byte_idx) {
    bytes[byte_idx] = static_cast<char>((length >> (8 * byte_idx)) & 0xff);
  }
  return bytes + header + data;
}

// Runs `body`, expects an exception of type E whose one-line message contains
// every one of `needles`.
template <typename E, typename Body>
void expect_error(Body&& body, std::initializer_list<std::string> needles) {
  try {
    body();
    ADD_FAILURE() << "no exception thrown";
  } catch (const E& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
    for (const auto& needle : needles) {
      EXPECT_NE(message.find(needle), std::string::npos)
          << "message lacks '" << needle << "': " << message;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

}  // namespace gptq::io::testing
