// libFuzzer target for SafetensorsFile::parse_header. The input is a whole
// .safetensors file (u64 length | header | data), checked the way open()
// checks it; on success every invariant the reader relies on is re-checked
// here, so a validation gap crashes instead of passing silently.
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

#include "gptq/core/error.h"
#include "gptq/io/safetensors.h"

namespace {

// Errors are one line, name the file and stay short whatever the input holds.
void one_line_naming_file(const char* message) {
  const std::string_view text(message);
  if (text.find('\n') != std::string_view::npos) __builtin_trap();
  if (text.rfind("fuzz.safetensors: ", 0) != 0) __builtin_trap();
  if (text.size() > 1024) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t header_size = 0;
  std::memcpy(&header_size, data, 8);
  if (header_size > size - 8) return 0;  // open() rejects this before parsing
  std::vector<gptq::io::TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  try {
    gptq::io::SafetensorsFile::parse_header(data + 8, header_size, size, "fuzz.safetensors",
                                            tensors, metadata);
  } catch (const gptq::InputError& e) {
    one_line_naming_file(e.what());
    return 0;
  } catch (const gptq::UnsupportedError& e) {
    one_line_naming_file(e.what());
    return 0;
  }
  // Anything else escaping (std::bad_alloc, nlohmann exceptions, gptq::Error
  // from GPTQ_ASSERT) aborts the run as an uncaught exception: a finding.
  const uint64_t data_size = size - 8 - header_size;
  uint64_t covered = 0;
  for (const auto& info : tensors) {
    if (info.data_end < info.data_begin || info.data_end > data_size) __builtin_trap();
    if (info.data_begin != covered) __builtin_trap();  // sorted, tiling the data section
    covered = info.data_end;
    uint64_t n_bytes = c10::elementSize(info.dtype);
    for (int64_t extent : info.shape) {
      if (extent < 0) __builtin_trap();
      if (__builtin_mul_overflow(n_bytes, static_cast<uint64_t>(extent), &n_bytes)) __builtin_trap();
    }
    if (n_bytes != info.nbytes()) __builtin_trap();
    if (info.numel() < 0) __builtin_trap();
  }
  if (covered != data_size) __builtin_trap();
  return 0;
}
