// SafetensorsFile: one memory-mapped .safetensors file, read lazily.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <bit>
#include <cerrno>
#include <cstring>

#include "gptq/core/error.h"
#include "gptq/io/json.h"
#include "gptq/io/safetensors.h"

namespace gptq::io {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; big-endian hosts are not supported");

// Closes the descriptor on every exit path of open().
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string name = path.string();
  FdGuard guard{::open(name.c_str(), O_RDONLY | O_CLOEXEC)};
  GPTQ_CHECK(guard.fd >= 0, name, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  GPTQ_CHECK(::fstat(guard.fd, &st) == 0, name, ": cannot stat: ", std::strerror(errno));
  GPTQ_CHECK(S_ISREG(st.st_mode), name, ": not a regular file");
  const auto file_size = static_cast<uint64_t>(st.st_size);
  GPTQ_CHECK(file_size >= 8, name, ": file of ", file_size,
             " bytes is too small for a safetensors header (truncated file?)");

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, guard.fd, 0);
  GPTQ_CHECK(mapping != MAP_FAILED, name, ": cannot mmap ", file_size,
             " bytes: ", std::strerror(errno));
  file->mapping_ = static_cast<const uint8_t*>(mapping);
  file->mapping_size_ = file_size;
  file->fd_ = guard.fd;
  guard.fd = -1;

  uint64_t header_size = 0;
  std::memcpy(&header_size, file->mapping_, 8);
  GPTQ_CHECK(header_size <= file_size - 8, name, ": header length ", header_size,
             " extends beyond the file of ", file_size, " bytes (truncated file?)");
  parse_header(file->mapping_ + 8, header_size, file_size, name, file->tensors_, file->metadata_);
  file->data_start_ = 8 + header_size;
  for (size_t tensor_idx = 0; tensor_idx < file->tensors_.size(); ++tensor_idx) {
    file->index_.emplace(file->tensors_[tensor_idx].name, tensor_idx);
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(const_cast<uint8_t*>(mapping_), mapping_size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* SafetensorsFile::data(const TensorInfo& info) const {
  return mapping_ + data_start_ + info.data_begin;
}

at::Tensor SafetensorsFile::view(const std::string& name) const {
  const TensorInfo* info = find(name);
  GPTQ_CHECK(info != nullptr, path_.string(), ": no tensor ", quote_for_error(name));
  // The mapping is read-only: the view must not be written to.
  return at::from_blob(const_cast<uint8_t*>(data(*info)), info->shape,
                       at::TensorOptions().dtype(info->dtype).device(c10::kCPU));
}

namespace {

// pread of exactly n_bytes at offset; a short file is an InputError naming the tensor.
void read_exactly(int fd, char* into, uint64_t n_bytes, uint64_t offset, const std::string& where) {
  while (n_bytes > 0) {
    const ssize_t got = ::pread(fd, into, std::min<uint64_t>(n_bytes, uint64_t{1} << 30), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    GPTQ_CHECK(got >= 0, where, ": read failed: ", std::strerror(errno));
    GPTQ_CHECK(got > 0, where, ": the file ends ", n_bytes,
               " byte(s) short of it (truncated or replaced while the run was reading it?)");
    into += got;
    offset += static_cast<uint64_t>(got);
    n_bytes -= static_cast<uint64_t>(got);
  }
}

// Any byte but 0/1 in a bool tensor is undefined behaviour in libtorch.
void check_bool_bytes(const at::Tensor& part, int64_t first_element, const std::string& where) {
  const auto* bytes = static_cast<const uint8_t*>(part.data_ptr());
  for (int64_t idx = 0; idx < part.numel(); ++idx) {
    GPTQ_CHECK(bytes[idx] <= 1, where, ": BOOL byte ", static_cast<int>(bytes[idx]), " at element ",
               first_element + idx, " is not 0 or 1");
  }
}

}  // namespace

at::Tensor SafetensorsFile::load(const std::string& name, std::optional<c10::ScalarType> dtype,
                                 c10::Device device) const {
  const TensorInfo* found = find(name);
  GPTQ_CHECK(found != nullptr, path_.string(), ": no tensor ", quote_for_error(name));
  const TensorInfo& info = *found;
  const std::string where = path_.string() + ": tensor " + quote_for_error(name);
  const c10::ScalarType target = dtype.value_or(info.dtype);
  const uint64_t offset = data_start_ + info.data_begin;
  // pread, not the mapping: a file cut short after open() is then a short
  // read with a message, not a SIGBUS, and no file page is left in our RSS.
  // On a device the stored bytes cross the bus and are converted there.
  const bool convert_on_cpu = device.is_cpu() && target != info.dtype;
  at::Tensor out = at::empty(info.shape, at::TensorOptions().dtype(convert_on_cpu ? target : info.dtype));
  if (!convert_on_cpu) {
    read_exactly(fd_, static_cast<char*>(out.data_ptr()), info.nbytes(), offset, where);
    if (info.dtype == c10::ScalarType::Bool) check_bool_bytes(out.reshape(-1), 0, where);
    if (!device.is_cpu()) out = out.to(device);
    return out.scalar_type() == target ? out : out.to(target);
  }
  // Converting on the CPU: through a bounded buffer, so only the result is
  // ever resident at full size.
  const int64_t element_size = static_cast<int64_t>(c10::elementSize(info.dtype));
  const int64_t per_piece = std::max<int64_t>(1, (int64_t{1} << 20) / element_size);
  at::Tensor flat = out.reshape(-1);
  at::Tensor buffer = at::empty({std::min(per_piece, std::max<int64_t>(1, info.numel()))},
                                at::TensorOptions().dtype(info.dtype));
  for (int64_t start = 0; start < info.numel(); start += per_piece) {
    const int64_t count = std::min(per_piece, info.numel() - start);
    at::Tensor piece = buffer.narrow(0, 0, count);
    read_exactly(fd_, static_cast<char*>(piece.data_ptr()), static_cast<uint64_t>(count * element_size),
                 offset + static_cast<uint64_t>(start * element_size), where);
    if (info.dtype == c10::ScalarType::Bool) check_bool_bytes(piece, start, where);
    flat.narrow(0, start, count).copy_(piece);
  }
  return out;
}

}  // namespace gptq::io
