#include "gptq/gguf/ggml_type.h"

#include <array>
#include <cctype>

#include "gptq/core/error.h"

namespace gptq::gguf {
namespace {

struct Entry {
  GgmlType type;
  GgmlTypeInfo info;
};

// Sizes from ggml-common.h: e.g. block_q4_K = fp16 d, fp16 dmin, 12 bytes of
// 6-bit scales/mins, 128 bytes of nibbles per 256 values.
constexpr std::array<Entry, 9> kTypes = {{
    {GgmlType::kF32, {"f32", 1, 4, false}},
    {GgmlType::kF16, {"f16", 1, 2, false}},
    {GgmlType::kQ4_0, {"q4_0", 32, 18, true}},
    {GgmlType::kQ4_1, {"q4_1", 32, 20, true}},
    {GgmlType::kQ8_0, {"q8_0", 32, 34, true}},
    {GgmlType::kQ4_K, {"q4_K", 256, 144, true}},
    {GgmlType::kQ5_K, {"q5_K", 256, 176, true}},
    {GgmlType::kQ6_K, {"q6_K", 256, 210, true}},
    {GgmlType::kBF16, {"bf16", 1, 2, false}},
}};

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t idx = 0; idx < a.size(); ++idx) {
    if (std::tolower(static_cast<unsigned char>(a[idx])) !=
        std::tolower(static_cast<unsigned char>(b[idx]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

const GgmlTypeInfo& type_info(GgmlType type) {
  for (const Entry& entry : kTypes) {
    if (entry.type == type) return entry.info;
  }
  GPTQ_ASSERT(false, "unknown ggml type ", static_cast<uint32_t>(type));
  return kTypes[0].info;  // unreachable
}

std::optional<GgmlType> parse_ggml_type(std::string_view name) {
  for (const Entry& entry : kTypes) {
    if (equal_ignoring_case(entry.info.name, name)) return entry.type;
  }
  return std::nullopt;
}

int64_t row_bytes(GgmlType type, int64_t n_cols) {
  const GgmlTypeInfo& info = type_info(type);
  GPTQ_CHECK(n_cols > 0 && n_cols % info.block_size == 0, "a ", info.name, " row of ", n_cols,
             " values does not fill whole blocks of ", info.block_size);
  return n_cols / info.block_size * info.type_size;
}

int64_t ggml_group_size(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
      return 32;
    case GgmlType::kQ6_K:
      return 16;
    default:
      break;
  }
  GPTQ_CHECK(false, "ggml type ", type_info(type).name, " is not quantized");
  return 0;
}

}  // namespace gptq::gguf
