#include "gptq/gguf/gguf_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

#include "gptq/core/error.h"
#include "gptq/core/fault_point.h"
#include "gptq/io/durable.h"
#include "gptq/io/output_file.h"

namespace gptq::gguf {
namespace fs = std::filesystem;

namespace {

constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;

template <typename T>
void append_pod(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

void append_string(std::string& out, std::string_view text) {
  append_pod<uint64_t>(out, text.size());
  out.append(text);
}

uint64_t padding_to_alignment(uint64_t size) { return (kAlignment - size % kAlignment) % kAlignment; }

template <typename T>
std::string array_of(GgufValueType element, const std::vector<T>& values) {
  std::string encoded;
  append_pod<uint32_t>(encoded, static_cast<uint32_t>(element));
  append_pod<uint64_t>(encoded, values.size());
  for (const T& value : values) append_pod<T>(encoded, value);
  return encoded;
}

fs::path beside(const fs::path& output, const std::string& suffix) {
  const fs::path dir = output.parent_path().empty() ? fs::path(".") : output.parent_path();
  return dir / ("." + output.filename().string() + suffix + "-" + std::to_string(::getpid()));
}

// Temporaries of writers whose process is gone (a kill -9 runs no
// destructor): ".<output>.tmp-<pid>" and ".<output>.data-<pid>".
void remove_stale_temporaries(const fs::path& output) {
  const fs::path dir = output.parent_path().empty() ? fs::path(".") : output.parent_path();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    for (const std::string& stem : {"." + output.filename().string() + ".tmp-", "." + output.filename().string() + ".data-"}) {
      if (!name.starts_with(stem)) continue;
      const std::string pid_text = name.substr(stem.size());
      if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
      const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
      if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
      fs::remove(entry.path(), ec);
    }
  }
}

}  // namespace

GgufFileWriter::GgufFileWriter(fs::path output) : output_(std::move(output)) {
  std::error_code ec;
  GPTQ_CHECK(!fs::exists(output_, ec), "output '", output_.string(), "' already exists; choose a new file or remove it");
  const fs::path dir = output_.parent_path().empty() ? fs::path(".") : output_.parent_path();
  GPTQ_CHECK(fs::is_directory(dir, ec), "output '", output_.string(), "': directory '", dir.string(),
             "' does not exist");
  remove_stale_temporaries(output_);
  temp_ = beside(output_, ".tmp");
  spool_path_ = beside(output_, ".data");
  fs::remove(spool_path_, ec);
  spool_ = std::make_unique<io::OutputFile>(spool_path_);
}

GgufFileWriter::~GgufFileWriter() {
  spool_.reset();
  std::error_code ec;
  fs::remove(spool_path_, ec);
  if (!committed_) fs::remove(temp_, ec);
}

void GgufFileWriter::set_raw(const std::string& key, GgufValueType type, std::string encoded) {
  std::string value;
  append_pod<uint32_t>(value, static_cast<uint32_t>(type));
  value += encoded;
  for (auto& [existing, stored] : kvs_) {
    if (existing == key) {
      stored = std::move(value);
      return;
    }
  }
  kvs_.emplace_back(key, std::move(value));
}

void GgufFileWriter::set_u32(const std::string& key, uint32_t value) {
  std::string encoded;
  append_pod(encoded, value);
  set_raw(key, GgufValueType::kU32, std::move(encoded));
}

void GgufFileWriter::set_i32(const std::string& key, int32_t value) {
  std::string encoded;
  append_pod(encoded, value);
  set_raw(key, GgufValueType::kI32, std::move(encoded));
}

void GgufFileWriter::set_u64(const std::string& key, uint64_t value) {
  std::string encoded;
  append_pod(encoded, value);
  set_raw(key, GgufValueType::kU64, std::move(encoded));
}

void GgufFileWriter::set_f32(const std::string& key, float value) {
  std::string encoded;
  append_pod(encoded, value);
  set_raw(key, GgufValueType::kF32, std::move(encoded));
}

void GgufFileWriter::set_bool(const std::string& key, bool value) {
  set_raw(key, GgufValueType::kBool, std::string(1, value ? '\1' : '\0'));
}

void GgufFileWriter::set_string(const std::string& key, std::string_view value) {
  std::string encoded;
  append_string(encoded, value);
  set_raw(key, GgufValueType::kString, std::move(encoded));
}

void GgufFileWriter::set_strings(const std::string& key, const std::vector<std::string>& values) {
  std::string encoded;
  append_pod<uint32_t>(encoded, static_cast<uint32_t>(GgufValueType::kString));
  append_pod<uint64_t>(encoded, values.size());
  for (const auto& value : values) append_string(encoded, value);
  set_raw(key, GgufValueType::kArray, std::move(encoded));
}

void GgufFileWriter::set_f32s(const std::string& key, const std::vector<float>& values) {
  set_raw(key, GgufValueType::kArray, array_of(GgufValueType::kF32, values));
}

void GgufFileWriter::set_i32s(const std::string& key, const std::vector<int32_t>& values) {
  set_raw(key, GgufValueType::kArray, array_of(GgufValueType::kI32, values));
}

void GgufFileWriter::add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& shape,
                                const at::Tensor& bytes) {
  GPTQ_ASSERT(!committed_, "tensor '", name, "' added after commit");
  GPTQ_ASSERT(!shape.empty() && shape.size() <= 4, "tensor '", name, "' has ", shape.size(), " dimensions");
  for (const auto& tensor : tensors_) GPTQ_ASSERT(tensor.name != name, "tensor '", name, "' added twice");
  int64_t n_rows = 1;
  for (size_t dim = 0; dim + 1 < shape.size(); ++dim) n_rows *= shape[dim];
  const int64_t expected = n_rows * row_bytes(type, shape.back());
  const at::Tensor data = bytes.contiguous();
  GPTQ_ASSERT(data.device().is_cpu() && static_cast<int64_t>(data.nbytes()) == expected, "tensor '", name, "': ",
              data.nbytes(), " bytes given, ", type_info(type).name, " of that shape needs ", expected);
  tensors_.push_back({name, type, shape, spooled_});
  spool_->write(data.data_ptr(), data.nbytes());
  const std::string zeros(padding_to_alignment(data.nbytes()), '\0');
  spool_->write(zeros.data(), zeros.size());
  spooled_ += data.nbytes() + zeros.size();
}

uint64_t GgufFileWriter::commit() {
  GPTQ_ASSERT(!committed_, "commit() called twice");
  std::string header;
  header.append("GGUF", 4);
  append_pod<uint32_t>(header, kVersion);
  append_pod<uint64_t>(header, tensors_.size());
  append_pod<uint64_t>(header, kvs_.size());
  for (const auto& [key, value] : kvs_) {
    append_string(header, key);
    header += value;
  }
  for (const auto& tensor : tensors_) {
    append_string(header, tensor.name);
    append_pod<uint32_t>(header, static_cast<uint32_t>(tensor.shape.size()));
    for (auto dim = tensor.shape.rbegin(); dim != tensor.shape.rend(); ++dim) append_pod<uint64_t>(header, *dim);
    append_pod<uint32_t>(header, static_cast<uint32_t>(tensor.type));
    append_pod<uint64_t>(header, tensor.offset);
  }
  header.append(padding_to_alignment(header.size()), '\0');

  spool_->finish();
  spool_.reset();
  const int spool_fd = ::open(spool_path_.c_str(), O_RDONLY | O_CLOEXEC);
  GPTQ_CHECK(spool_fd >= 0, spool_path_.string(), ": cannot reopen: ", std::strerror(errno));
  try {
    io::OutputFile out(temp_);
    out.write(header.data(), header.size());
    fault_point("gguf-write");
    out.append_from(spool_fd, spooled_);
    out.finish();
  } catch (...) {
    ::close(spool_fd);
    throw;
  }
  ::close(spool_fd);
  std::error_code ec;
  fs::remove(spool_path_, ec);
  fault_point("gguf-before-rename");
  if (::rename(temp_.c_str(), output_.c_str()) != 0) {
    throw Error(output_.string() + ": rename failed: " + std::strerror(errno));
  }
  committed_ = true;
  io::sync_directory(output_.parent_path().empty() ? fs::path(".") : output_.parent_path());
  return header.size() + spooled_;
}

namespace {

// Bounded little-endian reads over a whole file's header bytes.
class HeaderCursor {
 public:
  HeaderCursor(std::ifstream& in, const fs::path& path, uint64_t file_size)
      : in_(in), path_(path), file_size_(file_size) {}

  template <typename T>
  T pod() {
    T value;
    take(&value, sizeof value);
    return value;
  }
  std::string string() {
    const uint64_t size = pod<uint64_t>();
    need(size);
    std::string text(size, '\0');
    take(text.data(), size);
    return text;
  }
  nlohmann::json value(GgufValueType type, int depth = 0) {
    switch (type) {
      case GgufValueType::kU8: return pod<uint8_t>();
      case GgufValueType::kI8: return pod<int8_t>();
      case GgufValueType::kU16: return pod<uint16_t>();
      case GgufValueType::kI16: return pod<int16_t>();
      case GgufValueType::kU32: return pod<uint32_t>();
      case GgufValueType::kI32: return pod<int32_t>();
      case GgufValueType::kF32: return pod<float>();
      case GgufValueType::kBool: return pod<uint8_t>() != 0;
      case GgufValueType::kString: return string();
      case GgufValueType::kU64: return pod<uint64_t>();
      case GgufValueType::kI64: return pod<int64_t>();
      case GgufValueType::kF64: return pod<double>();
      case GgufValueType::kArray: {
        GPTQ_CHECK(depth == 0, path_.string(), ": nested GGUF arrays");
        const auto element = static_cast<GgufValueType>(pod<uint32_t>());
        const uint64_t count = pod<uint64_t>();
        need(count);  // every element takes at least one byte
        nlohmann::json array = nlohmann::json::array();
        for (uint64_t index = 0; index < count; ++index) array.push_back(value(element, depth + 1));
        return array;
      }
    }
    throw InputError(path_.string() + ": unknown GGUF value type " + std::to_string(static_cast<uint32_t>(type)));
  }
  uint64_t position() const { return position_; }

 private:
  void need(uint64_t n_bytes) const {
    GPTQ_CHECK(n_bytes <= file_size_ - position_, path_.string(), ": truncated GGUF header (needs ", n_bytes,
               " more byte(s) at offset ", position_, ")");
  }
  void take(void* out, uint64_t n_bytes) {
    need(n_bytes);
    in_.read(static_cast<char*>(out), static_cast<std::streamsize>(n_bytes));
    GPTQ_CHECK(in_.good(), path_.string(), ": read failed at offset ", position_);
    position_ += n_bytes;
  }

  std::ifstream& in_;
  const fs::path& path_;
  uint64_t file_size_;
  uint64_t position_ = 0;
};

}  // namespace

GgufFileReader::GgufFileReader(fs::path path) : path_(std::move(path)) {
  std::error_code ec;
  const uint64_t file_size = fs::file_size(path_, ec);
  GPTQ_CHECK(!ec, path_.string(), ": cannot read: ", ec.message());
  std::ifstream in(path_, std::ios::binary);
  GPTQ_CHECK(in.good(), path_.string(), ": cannot open");
  HeaderCursor cursor(in, path_, file_size);
  char magic[4];
  for (char& byte : magic) byte = static_cast<char>(cursor.pod<uint8_t>());
  GPTQ_CHECK(std::string(magic, 4) == "GGUF", path_.string(), ": not a GGUF file (bad magic)");
  const uint32_t version = cursor.pod<uint32_t>();
  GPTQ_CHECK(version == 2 || version == 3, path_.string(), ": GGUF version ", version, " (2 and 3 are read)");
  const uint64_t n_tensors = cursor.pod<uint64_t>();
  const uint64_t n_kvs = cursor.pod<uint64_t>();
  GPTQ_CHECK(n_tensors <= file_size && n_kvs <= file_size, path_.string(), ": implausible counts");
  for (uint64_t index = 0; index < n_kvs; ++index) {
    std::string key = cursor.string();
    kvs_[key] = cursor.value(static_cast<GgufValueType>(cursor.pod<uint32_t>()));
  }
  uint64_t alignment = kAlignment;
  if (auto found = kvs_.find("general.alignment"); found != kvs_.end() && found->second.is_number_unsigned()) {
    alignment = found->second.get<uint64_t>();
    GPTQ_CHECK(alignment > 0 && alignment <= 4096, path_.string(), ": general.alignment ", alignment);
  }
  for (uint64_t index = 0; index < n_tensors; ++index) {
    Tensor tensor;
    tensor.name = cursor.string();
    const uint32_t n_dims = cursor.pod<uint32_t>();
    GPTQ_CHECK(n_dims >= 1 && n_dims <= 4, path_.string(), ": tensor '", tensor.name, "' has ", n_dims, " dims");
    for (uint32_t dim = 0; dim < n_dims; ++dim) {
      const uint64_t extent = cursor.pod<uint64_t>();
      GPTQ_CHECK(extent > 0 && extent < (uint64_t{1} << 40), path_.string(), ": tensor '", tensor.name,
                 "' has extent ", extent);
      tensor.shape.insert(tensor.shape.begin(), static_cast<int64_t>(extent));
    }
    const uint32_t type = cursor.pod<uint32_t>();
    constexpr uint32_t kKnown[] = {0, 1, 2, 3, 8, 12, 13, 14, 30};  // the GgmlType values
    GPTQ_CHECK(std::find(std::begin(kKnown), std::end(kKnown), type) != std::end(kKnown), path_.string(),
               ": tensor '", tensor.name, "' has ggml type ", type, ", which gptq-quant does not read");
    tensor.type = static_cast<GgmlType>(type);
    tensor.offset = cursor.pod<uint64_t>();
    int64_t n_rows = 1;
    for (size_t dim = 0; dim + 1 < tensor.shape.size(); ++dim) n_rows *= tensor.shape[dim];
    tensor.n_bytes = static_cast<uint64_t>(n_rows * row_bytes(tensor.type, tensor.shape.back()));
    tensors_.push_back(std::move(tensor));
  }
  const uint64_t data_start = (cursor.position() + alignment - 1) / alignment * alignment;
  for (Tensor& tensor : tensors_) {
    tensor.offset += data_start;
    GPTQ_CHECK(tensor.offset <= file_size && tensor.n_bytes <= file_size - tensor.offset, path_.string(),
               ": tensor '", tensor.name, "' lies past the end of the file");
  }
}

at::Tensor GgufFileReader::bytes(const Tensor& tensor) const {
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(tensor.offset));
  int64_t n_rows = 1;
  for (size_t dim = 0; dim + 1 < tensor.shape.size(); ++dim) n_rows *= tensor.shape[dim];
  at::Tensor out = at::empty({n_rows, row_bytes(tensor.type, tensor.shape.back())}, at::kByte);
  in.read(static_cast<char*>(out.data_ptr()), static_cast<std::streamsize>(tensor.n_bytes));
  GPTQ_CHECK(in.good(), path_.string(), ": cannot read tensor '", tensor.name, "'");
  return out;
}

}  // namespace gptq::gguf
