#include "gptq/model/activation_file.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "gptq/core/error.h"

namespace gptq::model {
namespace {

// Live activation mappings (address -> bytes), for write_back_activation_files().
std::mutex g_mutex;
std::map<void*, size_t> g_live;

}  // namespace

at::Tensor file_backed_empty(const std::filesystem::path& dir, at::IntArrayRef sizes, c10::ScalarType dtype) {
  int64_t numel = 1;
  for (int64_t size : sizes) numel *= size;
  const size_t n_bytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
  std::string name = (dir / ".gptq-activations-XXXXXX").string();
  const int fd = ::mkstemp(name.data());
  if (fd < 0) throw Error(dir.string() + ": cannot create an activation file: " + std::strerror(errno));
  ::unlink(name.c_str());  // gone from the directory now, gone from the disk with the mapping
  auto fail = [&](const char* what, int error) {
    ::close(fd);
    throw Error(dir.string() + ": " + what + " of " + std::to_string(n_bytes) + " bytes of activations failed: " +
                std::strerror(error));
  };
  if (n_bytes == 0) {
    ::close(fd);
    return at::empty(sizes, at::TensorOptions().dtype(dtype));
  }
  if (const int error = ::posix_fallocate(fd, 0, static_cast<off_t>(n_bytes)); error != 0) fail("reserving", error);
  void* mapping = ::mmap(nullptr, n_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mapping == MAP_FAILED) fail("mapping", errno);
  ::close(fd);  // the mapping keeps the file
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_live[mapping] = n_bytes;
  }
  return at::from_blob(
      mapping, sizes,
      [n_bytes](void* data) {
        {
          std::lock_guard<std::mutex> lock(g_mutex);
          g_live.erase(data);
        }
        ::munmap(data, n_bytes);
      },
      at::TensorOptions().dtype(dtype));
}

void write_back_activation_files() {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const auto& [address, n_bytes] : g_live) {
    ::msync(address, n_bytes, MS_SYNC);
    ::madvise(address, n_bytes, MADV_DONTNEED);  // shared and now clean: only drops them from our RSS
  }
}

}  // namespace gptq::model
