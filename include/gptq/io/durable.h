#pragma once
// Files that survive a kill -9 or a power cut once the call returns: written
// under a temporary name in the same directory, fsync'd, renamed over the
// final name, and the directory fsync'd so that the rename itself is on disk.
// A reader sees the old file or the new one, never a part. Failures are
// gptq::Error (exit 1) naming the path with errno's text (ENOSPC: "No space
// left on device"); the temporary file is removed.
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gptq::io {

// fsync of a directory: makes the creations, renames and removals in it durable.
void sync_directory(const std::filesystem::path& dir);

void write_text_durably(const std::filesystem::path& path, std::string_view text);

// io::save_file (temporary name, fsync, rename) and then the directory's fsync.
void save_file_durably(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace gptq::io
