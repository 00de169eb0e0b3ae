#pragma once
// safetensors: reading (mmap, lazy, single file or sharded) and writing
// (size-capped shards + model.safetensors.index.json, temp name then rename).
//
// File layout (https://github.com/huggingface/safetensors):
//   u64 little-endian N | N bytes of UTF-8 JSON header | data section
//   header: {"__metadata__": {str: str}, "<name>": {"dtype": "F32"|"F16"|"BF16"|
//            "I64"|"I32"|"I16"|"I8"|"U8"|"BOOL"|"F64", "shape": [..],
//            "data_offsets": [begin, end]}, ...}
//   offsets are relative to the start of the data section; end-begin must equal
//   prod(shape)*itemsize; as in the reference reader, the tensors must tile the
//   data section exactly (no overlap, no gap, no trailing bytes). The header is
//   at most 100 MB, starts with '{', and may end in spaces (the writer pads it
//   so the data section is 8-byte aligned). Also read/written: U16, U32, U64,
//   F8_E4M3, F8_E5M2, C64.
// A sharded checkpoint is a directory with model.safetensors.index.json:
//   {"metadata": {"total_size": ..}, "weight_map": {"<name>": "<shard file>"}}.
//
// All errors are gptq::InputError (or UnsupportedError for an unknown dtype)
// with one line naming the file and, where relevant, the tensor (names are
// quoted with control bytes escaped). Write failures (disk full) are gptq::Error.
//
// Implementation: src/io/safetensors_header.cpp (parser, dtype names; also
// built into the libFuzzer target fuzz/), safetensors_reader.cpp,
// checkpoint.cpp, safetensors_writer.cpp.
#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace gptq::io {

// The file names transformers gives a one-file checkpoint and a sharded one's index.
inline constexpr const char* kSafetensorsFileName = "model.safetensors";
inline constexpr const char* kSafetensorsIndexName = "model.safetensors.index.json";

struct TensorInfo {
  std::string name;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t data_begin = 0;  // relative to the data section
  uint64_t data_end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return data_end - data_begin; }
};

// One .safetensors file, memory-mapped; the header is parsed and validated on
// open, tensor bytes are only touched when a tensor is loaded.
class SafetensorsFile {
 public:
  // Throws InputError naming `path` on any structural problem.
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file order
  const TensorInfo* find(const std::string& name) const;  // nullptr if absent
  bool contains(const std::string& name) const { return find(name) != nullptr; }

  // Reads the tensor into a new owned tensor (pread, not through the
  // mapping), converted to `dtype` (default: the stored dtype) on `device`
  // (default CPU; conversion happens on the device). InputError if absent, if
  // a BOOL byte is not 0/1, or if the file is shorter than its header says
  // (truncated or replaced while the run was going: through the mapping that
  // would be a SIGBUS). Reading does not map the file's pages into this
  // process, so loading a file tensor by tensor keeps only the copies resident.
  at::Tensor load(const std::string& name, std::optional<c10::ScalarType> dtype = std::nullopt,
                  c10::Device device = c10::Device(c10::kCPU)) const;
  // A zero-copy CPU view into the mapping; valid while this object lives. The
  // mapping is read-only: writing through the view crashes (use load()).
  at::Tensor view(const std::string& name) const;
  // Raw bytes of a tensor inside the mapping (for copying unchanged).
  const uint8_t* data(const TensorInfo& info) const;

  // Parses and validates a header (exposed for the fuzzer and tests).
  // `file_size` is the full size of the file the header came from.
  static void parse_header(const uint8_t* bytes, size_t size, uint64_t file_size,
                           const std::string& path_for_errors, std::vector<TensorInfo>& tensors,
                           std::map<std::string, std::string>& metadata);

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  const uint8_t* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  int fd_ = -1;  // kept open for load()'s reads
  uint64_t data_start_ = 0;
};

// All tensors of a checkpoint directory (or a single .safetensors file):
// model.safetensors, or the shards named by model.safetensors.index.json.
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& dir_or_file);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws InputError if absent
  at::Tensor load(const std::string& name, std::optional<c10::ScalarType> dtype = std::nullopt,
                  c10::Device device = c10::Device(c10::kCPU)) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  uint64_t total_bytes() const;
  const std::filesystem::path& root() const { return root_; }  // as passed to open()

 private:
  std::filesystem::path root_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> owner_;  // tensor name -> index into files_
};

// Writes tensors into shards of at most `max_shard_bytes` of tensor data (a
// tensor larger than the cap gets a shard of its own; 0 means no cap), in the
// order they are added. Each tensor's bytes are spooled to a temporary file
// as it is added, so memory stays at one tensor. Shards are named
// model-00001-of-0000N.safetensors (or model.safetensors when one shard) and,
// when there is more than one, model.safetensors.index.json is written too.
// Everything is written under temporary names and renamed in commit().
class ShardedWriter {
 public:
  ShardedWriter(std::filesystem::path output_dir, uint64_t max_shard_bytes,
                std::map<std::string, std::string> metadata = {});
  ~ShardedWriter();  // removes temporary files if commit() was never called

  // Tensors are written as-is (dtype, shape); CPU contiguous copies are made
  // as needed. Names must be unique.
  void add(const std::string& name, const at::Tensor& tensor);
  // Finishes all shards and the index; returns the files written.
  std::vector<std::filesystem::path> commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes one safetensors file at `path` (temp name, then rename).
void save_file(const std::filesystem::path& path,
               const std::vector<std::pair<std::string, at::Tensor>>& tensors,
               const std::map<std::string, std::string>& metadata = {});

// "F32" <-> c10::ScalarType; UnsupportedError on an unknown dtype string.
c10::ScalarType dtype_from_string(const std::string& dtype);
std::string dtype_to_string(c10::ScalarType dtype);

}  // namespace gptq::io
