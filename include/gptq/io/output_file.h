#pragma once
// OutputFile: a file we create (never overwrite: an existing path is an
// error), write sequentially and fsync before closing. Every failure is a
// gptq::Error (exit 1) naming the path with errno's text ("No space left on
// device", "File too large"). The caller owns naming (write under a temporary
// name, rename when complete) and removal after a failure.
#include <cstdint>
#include <filesystem>

namespace gptq::io {

class OutputFile {
 public:
  // Creates `path` (O_EXCL); InputError naming it when it cannot be created.
  explicit OutputFile(std::filesystem::path path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* bytes, size_t n_bytes);
  // Appends the first `n_bytes` of the file open as `source_fd`
  // (copy_file_range, or a buffer where the kernel cannot).
  void append_from(int source_fd, uint64_t n_bytes);
  // fsync and close; the file is complete on disk when this returns.
  void finish();
  const std::filesystem::path& path() const { return path_; }

 private:
  void copy_by_buffer(int source_fd, int64_t offset, uint64_t n_bytes);
  [[noreturn]] void fail(const char* what) const;

  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace gptq::io
