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

size_t page_size() {
  static const size_t size = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

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

at::Tensor SafetensorsFile::load(const std::string& name, std::optional<c10::ScalarType> dtype,
                                 c10::Device device) const {
  at::Tensor stored = view(name);
  const TensorInfo& info = *find(name);
  if (info.dtype == c10::ScalarType::Bool) {
    // Any byte but 0/1 in a bool tensor is undefined behaviour in libtorch.
    const uint8_t* bytes = data(info);
    for (uint64_t byte_idx = 0; byte_idx < info.nbytes(); ++byte_idx) {
      GPTQ_CHECK(bytes[byte_idx] <= 1, path_.string(), ": tensor ", quote_for_error(name),
                 ": BOOL byte ", static_cast<int>(bytes[byte_idx]), " at element ", byte_idx,
                 " is not 0 or 1");
    }
  }
  const c10::ScalarType target = dtype.value_or(info.dtype);
  // On the CPU convert straight out of the mapping (one copy, not a clone and
  // a conversion); on a device convert there, so the bytes that cross the bus
  // stay at the stored size. copy=true either way: nothing returned aliases
  // the mapping, so its pages can be released as soon as the copy is done.
  const c10::ScalarType copied_dtype = device.is_cpu() ? target : info.dtype;
  at::Tensor copied = stored.to(device, copied_dtype, /*non_blocking=*/false, /*copy=*/true);
  release_pages(info);
  return copied_dtype == target ? copied : copied.to(target);
}

void SafetensorsFile::release_pages(const TensorInfo& info) const {
  if (info.nbytes() == 0) return;
  // Rounded outward, so the pages shared with neighbouring tensors (and the
  // header) go too: the mapping is PROT_READ, so no page of it was ever copied
  // on write and DONTNEED only unmaps page-cache pages; the next read (a
  // neighbour's load, a live view(), another thread) faults the same file bytes
  // back in. Rounding inward would keep up to two pages per tensor resident.
  const uintptr_t page = page_size();
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data(info));
  const uintptr_t aligned_begin = begin & ~(page - 1);
  const uintptr_t aligned_end = (begin + info.nbytes() + page - 1) & ~(page - 1);
  if (::madvise(reinterpret_cast<void*>(aligned_begin), aligned_end - aligned_begin,
                MADV_DONTNEED) != 0 &&
      !release_failed_.exchange(true)) {
    // Only memory is at stake, so warn once per file and go on.
    spdlog::warn("{}: madvise(MADV_DONTNEED) failed ({}); loaded tensors' file pages stay resident",
                 path_.string(), std::strerror(errno));
  }
}

}  // namespace gptq::io
