#pragma once
// GgmlType: the tensor element types of ggml (llama.cpp's tensor library) that
// gptq-quant reads or writes in a GGUF file, with their block geometry. The
// enum values are ggml's own `enum ggml_type` numbers, which GGUF stores in
// each tensor's header. A quantized type packs `block_size` consecutive
// values of a row into `type_size` bytes (layouts: gguf/ggml_codec.h); the
// float types have block_size 1.
//
// Throws: row_bytes() InputError when a row does not fill whole blocks.
#include <cstdint>
#include <optional>
#include <string_view>

namespace gptq::gguf {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

struct GgmlTypeInfo {
  std::string_view name;  // as ggml spells it: "q4_0", "q4_K", "f16", "bf16"
  int64_t block_size;     // values per block
  int64_t type_size;      // bytes per block
  bool quantized;
};

const GgmlTypeInfo& type_info(GgmlType type);

// Case-insensitive ggml name ("q4_0", "Q4_K", "f16", "bf16"); nullopt if unknown.
std::optional<GgmlType> parse_ggml_type(std::string_view name);

// Bytes of one row of n_cols values; InputError unless n_cols is a positive
// multiple of the block size.
int64_t row_bytes(GgmlType type, int64_t n_cols);

// Columns that share one grid (scale and offset): 32 for Q4_0, Q4_1, Q8_0,
// Q4_K and Q5_K, 16 for Q6_K. Float types: InputError.
int64_t ggml_group_size(GgmlType type);

}  // namespace gptq::gguf
