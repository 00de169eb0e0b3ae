// The safetensors header: dtype names and the parser/validator. Kept apart from
// the mmap reader and the writer so the libFuzzer target (fuzz/) can build it
// without the rest of the module.
#include <algorithm>
#include <array>
#include <limits>
#include <string_view>
#include <tuple>

#include "gptq/core/error.h"
#include "gptq/io/json.h"
#include "gptq/io/safetensors.h"

namespace gptq::io {
namespace {

struct DtypeName {
  std::string_view name;
  c10::ScalarType dtype;
};

// The reference's names; F8/U16..U64/C64 are read and written as-is.
constexpr std::array<DtypeName, 16> kDtypes = {{
    {"BOOL", c10::ScalarType::Bool},
    {"U8", c10::ScalarType::Byte},
    {"I8", c10::ScalarType::Char},
    {"I16", c10::ScalarType::Short},
    {"I32", c10::ScalarType::Int},
    {"I64", c10::ScalarType::Long},
    {"U16", c10::ScalarType::UInt16},
    {"U32", c10::ScalarType::UInt32},
    {"U64", c10::ScalarType::UInt64},
    {"F16", c10::ScalarType::Half},
    {"BF16", c10::ScalarType::BFloat16},
    {"F32", c10::ScalarType::Float},
    {"F64", c10::ScalarType::Double},
    {"F8_E4M3", c10::ScalarType::Float8_e4m3fn},
    {"F8_E5M2", c10::ScalarType::Float8_e5m2},
    {"C64", c10::ScalarType::ComplexFloat},
}};

// The reference refuses headers over 100 MB; so do we (bounds the allocation
// a hostile length prefix can ask for).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr int kMaxHeaderDepth = 4;  // {"t": {"shape": [..]}} is 3 deep

std::string quoted(const std::string& name) { return quote_for_error(name); }

std::string json_for_error(const nlohmann::json& value) {
  return quote_for_error(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), 40);
}

uint64_t json_u64(const nlohmann::json& value, const std::string& where) {
  GPTQ_CHECK(value.is_number_integer(), where, " must be a non-negative integer, got ",
             json_for_error(value));
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  int64_t signed_value = value.get<int64_t>();
  GPTQ_CHECK(signed_value >= 0, where, " must be a non-negative integer, got ", signed_value);
  return static_cast<uint64_t>(signed_value);
}

TensorInfo parse_tensor_entry(const std::string& name, const nlohmann::json& entry,
                              const std::string& where) {
  GPTQ_CHECK(entry.is_object(), where, ": entry is not a JSON object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  GPTQ_CHECK(dtype_it != entry.end(), where, ": missing 'dtype'");
  GPTQ_CHECK(shape_it != entry.end(), where, ": missing 'shape'");
  GPTQ_CHECK(offsets_it != entry.end(), where, ": missing 'data_offsets'");
  GPTQ_CHECK(dtype_it->is_string(), where, ": 'dtype' is not a string");
  GPTQ_CHECK(shape_it->is_array(), where, ": 'shape' is not an array");
  GPTQ_CHECK(offsets_it->is_array() && offsets_it->size() == 2, where,
             ": 'data_offsets' is not an array [begin, end]");

  TensorInfo info;
  info.name = name;
  try {
    info.dtype = dtype_from_string(dtype_it->get_ref<const std::string&>());
  } catch (const UnsupportedError&) {
    throw UnsupportedError(where + ": unsupported safetensors dtype " +
                           quoted(dtype_it->get_ref<const std::string&>()));
  }
  // prod(shape) * itemsize must fit in u64 (and numel in int64 for libtorch).
  uint64_t n_bytes = c10::elementSize(info.dtype);
  for (const auto& dim : *shape_it) {
    uint64_t extent = json_u64(dim, where + ": shape dimension");
    GPTQ_CHECK(extent <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), where,
               ": shape dimension ", extent, " too large");
    if (extent != 0 && n_bytes > std::numeric_limits<int64_t>::max() / extent) {
      throw InputError(where + ": shape overflows the addressable size");
    }
    n_bytes *= extent;
    info.shape.push_back(static_cast<int64_t>(extent));
  }
  info.data_begin = json_u64((*offsets_it)[0], where + ": data_offsets begin");
  info.data_end = json_u64((*offsets_it)[1], where + ": data_offsets end");
  GPTQ_CHECK(info.data_end >= info.data_begin, where, ": data_offsets end ", info.data_end,
             " < begin ", info.data_begin);
  GPTQ_CHECK(info.nbytes() == n_bytes, where, ": data_offsets span ", info.nbytes(),
             " bytes but shape x itemsize is ", n_bytes);
  return info;
}

void parse_metadata(const nlohmann::json& value, const std::string& path,
                    std::map<std::string, std::string>& metadata) {
  if (value.is_null()) return;
  GPTQ_CHECK(value.is_object(), path, ": '__metadata__' is not a JSON object");
  for (const auto& [key, item] : value.items()) {
    GPTQ_CHECK(item.is_string(), path, ": '__metadata__' value for ", quoted(key),
               " is not a string");
    metadata[key] = item.get<std::string>();
  }
}

// The reference requires the tensors to tile the data section exactly: sorted
// by offset, each starts where the previous ended and the last ends at EOF.
// `tensors` is sorted by (begin, end).
void check_layout(const std::vector<TensorInfo>& tensors, uint64_t data_size,
                  const std::string& path) {
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const auto& info : tensors) {
    GPTQ_CHECK(info.data_end <= data_size, path, ": tensor ", quoted(info.name),
               ": data_offsets [", info.data_begin, ", ", info.data_end,
               "] outside the data section of ", data_size, " bytes (truncated file?)");
    GPTQ_CHECK(info.data_begin >= covered, path, ": tensor ", quoted(info.name),
               " overlaps tensor ", quoted(previous ? previous->name : std::string()),
               " (bytes ", info.data_begin, "..", covered, ")");
    GPTQ_CHECK(info.data_begin == covered, path, ": gap of ", info.data_begin - covered,
               " bytes before tensor ", quoted(info.name), " at offset ", covered);
    covered = info.data_end;
    previous = &info;
  }
  GPTQ_CHECK(covered == data_size, path, ": data section has ", data_size,
             " bytes but the tensors cover ", covered, " (trailing bytes)");
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t extent : shape) n *= extent;
  return n;
}

c10::ScalarType dtype_from_string(const std::string& dtype) {
  for (const auto& entry : kDtypes) {
    if (entry.name == dtype) return entry.dtype;
  }
  throw UnsupportedError("unsupported safetensors dtype '" + dtype + "'");
}

std::string dtype_to_string(c10::ScalarType dtype) {
  for (const auto& entry : kDtypes) {
    if (entry.dtype == dtype) return std::string(entry.name);
  }
  throw UnsupportedError(std::string("dtype ") + c10::toString(dtype) +
                         " cannot be stored in safetensors");
}

void SafetensorsFile::parse_header(const uint8_t* bytes, size_t size, uint64_t file_size,
                                   const std::string& path, std::vector<TensorInfo>& tensors,
                                   std::map<std::string, std::string>& metadata) {
  GPTQ_CHECK(size <= kMaxHeaderBytes, path, ": header of ", size, " bytes exceeds the ",
             kMaxHeaderBytes, "-byte limit");
  GPTQ_CHECK(file_size >= 8 && size <= file_size - 8, path, ": header of ", size,
             " bytes extends beyond the file of ", file_size, " bytes (truncated file?)");
  GPTQ_CHECK(size > 0 && bytes[0] == '{', path, ": header does not start with '{'");
  std::string_view text(reinterpret_cast<const char*>(bytes), size);
  nlohmann::json header = parse_json_strict(text, path + ": header", kMaxHeaderDepth);
  GPTQ_CHECK(header.is_object(), path, ": header is not a JSON object");

  tensors.clear();
  metadata.clear();
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      parse_metadata(entry, path, metadata);
      continue;
    }
    tensors.push_back(parse_tensor_entry(name, entry, path + ": tensor " + quoted(name)));
  }
  // File order is data order, as a reader walking the file expects.
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.data_begin, a.data_end, a.name) < std::tie(b.data_begin, b.data_end, b.name);
  });
  check_layout(tensors, file_size - 8 - size, path);
}

}  // namespace gptq::io
