#include "gptq/io/output_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "gptq/core/error.h"

namespace gptq::io {

namespace fs = std::filesystem;

OutputFile::OutputFile(fs::path path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  GPTQ_CHECK(fd_ >= 0, path_.string(), ": cannot create: ", std::strerror(errno));
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutputFile::write(const void* bytes, size_t n_bytes) {
  const auto* cursor = static_cast<const char*>(bytes);
  while (n_bytes > 0) {
    ssize_t written = ::write(fd_, cursor, std::min<size_t>(n_bytes, size_t{1} << 30));
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) fail("write");
    cursor += written;
    n_bytes -= static_cast<size_t>(written);
  }
}

void OutputFile::append_from(int source_fd, uint64_t n_bytes) {
  loff_t source_offset = 0;
  while (n_bytes > 0) {
    ssize_t copied = ::copy_file_range(source_fd, &source_offset, fd_, nullptr,
                                       std::min<uint64_t>(n_bytes, uint64_t{1} << 30), 0);
    if (copied < 0 && errno == EINTR) continue;
    if (copied < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) {
      copy_by_buffer(source_fd, source_offset, n_bytes);
      return;
    }
    if (copied <= 0) fail("copy");
    n_bytes -= static_cast<uint64_t>(copied);
  }
}

void OutputFile::finish() {
  if (::fsync(fd_) != 0) fail("fsync");
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close");
}

void OutputFile::copy_by_buffer(int source_fd, int64_t offset, uint64_t n_bytes) {
  std::vector<char> buffer(size_t{8} << 20);
  while (n_bytes > 0) {
    ssize_t got = ::pread(source_fd, buffer.data(), std::min<uint64_t>(n_bytes, buffer.size()), offset);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) fail("read back");
    write(buffer.data(), static_cast<size_t>(got));
    offset += got;
    n_bytes -= static_cast<uint64_t>(got);
  }
}

void OutputFile::fail(const char* what) const {
  throw Error(path_.string() + ": " + what + " failed: " + std::strerror(errno));
}

}  // namespace gptq::io
