#pragma once
// GgufFileWriter: one GGUF file (llama.cpp's model format, version 3), written
// under a temporary name beside the output and renamed when complete.
//
// Layout (ggml `include/gguf.h`, gguf-py `gguf_writer.py`), little-endian:
//   magic    "GGUF"
//   uint32   version (3)
//   uint64   tensor count, uint64 key-value count
//   KV pairs key: string; uint32 value type; value
//              string = uint64 byte length + bytes (no terminator)
//              types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (1 byte),
//                     8 string, 9 array (uint32 element type, uint64 count, elements),
//                     10 u64, 11 i64, 12 f64
//   tensor   name: string; uint32 n_dims; uint64 ne[n_dims] (ne[0] the innermost,
//   infos    i.e. the reverse of the PyTorch shape); uint32 ggml type; uint64
//            offset of its data from the start of the data section (aligned)
//   padding  zeros up to a multiple of general.alignment (32 unless the KV says otherwise)
//   data     each tensor's bytes (rows of ggml blocks, gguf/ggml_codec.h), each
//            padded with zeros to the alignment
//
// Tensor bytes are spooled to a temporary file as they are added (memory stays
// at one tensor); commit() writes the header and appends the spool. Keys are
// written in the order they were first set; setting a key again replaces its
// value. An existing output is an InputError (exit 2) at construction; a
// writer destroyed before commit() leaves nothing behind; write failures
// (a full disk) are gptq::Error naming the file.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "gptq/gguf/ggml_type.h"

namespace gptq::io {
class OutputFile;
}

namespace gptq::gguf {

enum class GgufValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

class GgufFileWriter {
 public:
  explicit GgufFileWriter(std::filesystem::path output);
  ~GgufFileWriter();
  GgufFileWriter(const GgufFileWriter&) = delete;
  GgufFileWriter& operator=(const GgufFileWriter&) = delete;

  void set_u32(const std::string& key, uint32_t value);
  void set_i32(const std::string& key, int32_t value);
  void set_u64(const std::string& key, uint64_t value);
  void set_f32(const std::string& key, float value);
  void set_bool(const std::string& key, bool value);
  void set_string(const std::string& key, std::string_view value);
  void set_strings(const std::string& key, const std::vector<std::string>& values);
  void set_f32s(const std::string& key, const std::vector<float>& values);
  void set_i32s(const std::string& key, const std::vector<int32_t>& values);

  // `bytes`: uint8 [rows, row_bytes(type, cols)] (or any contiguous CPU tensor
  // holding exactly those bytes) for a tensor of PyTorch shape `shape`.
  void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& shape,
                  const at::Tensor& bytes);
  size_t n_tensors() const { return tensors_.size(); }

  // Writes the file and renames it into place; returns its size in bytes.
  uint64_t commit();

 private:
  struct TensorInfo {
    std::string name;
    GgmlType type;
    std::vector<int64_t> shape;
    uint64_t offset;
  };
  void set_raw(const std::string& key, GgufValueType type, std::string encoded);

  std::filesystem::path output_;
  std::filesystem::path temp_;
  std::filesystem::path spool_path_;
  std::unique_ptr<io::OutputFile> spool_;
  uint64_t spooled_ = 0;
  std::vector<std::pair<std::string, std::string>> kvs_;  // key -> type + value, encoded
  std::vector<TensorInfo> tensors_;
  bool committed_ = false;
};

// GgufFileReader: the KVs (as JSON values: numbers, bools, strings, arrays)
// and tensor table of a GGUF v2/v3 file, and any tensor's bytes. A malformed
// or truncated file is an InputError naming it; nothing is read past its end.
class GgufFileReader {
 public:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> shape;  // PyTorch order
    uint64_t offset;             // from the start of the file
    uint64_t n_bytes;
  };

  explicit GgufFileReader(std::filesystem::path path);
  const std::map<std::string, nlohmann::json>& kvs() const { return kvs_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }
  // uint8 [rows, row_bytes]: the stored rows of `tensor`.
  at::Tensor bytes(const Tensor& tensor) const;

 private:
  std::filesystem::path path_;
  std::map<std::string, nlohmann::json> kvs_;
  std::vector<Tensor> tensors_;
};

}  // namespace gptq::gguf
