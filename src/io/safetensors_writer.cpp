// Writing safetensors: save_file() for one file, ShardedWriter for size-capped
// shards plus model.safetensors.index.json. Every file is created under a
// temporary name in the destination directory and renamed once complete.
//
// ShardedWriter spools each tensor's bytes to a temporary file as it is added
// (memory stays at one tensor, not one shard) and, when a shard is full,
// writes the header followed by the spooled bytes (copy_file_range).
#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "gptq/core/error.h"
#include "gptq/core/fault_point.h"
#include "gptq/core/log.h"
#include "gptq/io/output_file.h"
#include "gptq/io/safetensors.h"

namespace gptq::io {
namespace {

namespace fs = std::filesystem;


struct Entry {
  std::string name;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// A unique temporary name beside `final_dir`, hidden so that globbing for
// *.safetensors never picks up a half-written file.
fs::path temp_name(const fs::path& dir, const std::string& stem) {
  static std::atomic<uint64_t> counter{0};
  return dir / ("." + stem + ".tmp-" + std::to_string(::getpid()) + "-" +
                std::to_string(counter.fetch_add(1)));
}

// A tensor as the contiguous CPU bytes that go into the file.
at::Tensor storable(const std::string& name, const at::Tensor& tensor) {
  GPTQ_CHECK(tensor.defined(), "tensor '", name, "' is undefined");
  try {
    (void)dtype_to_string(tensor.scalar_type());
  } catch (const UnsupportedError&) {
    rethrow_with_context("tensor '" + name + "'");
  }
  return tensor.detach().to(c10::kCPU).resolve_conj().resolve_neg().contiguous();
}

// The header text, padded with spaces so the data section starts 8-aligned.
std::string header_text(const std::vector<Entry>& entries,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  meta["format"] = "pt";
  for (const auto& [key, value] : metadata) meta[key] = value;
  header["__metadata__"] = std::move(meta);
  for (const auto& entry : entries) {
    header[entry.name] = {{"dtype", dtype_to_string(entry.dtype)},
                          {"shape", entry.shape},
                          {"data_offsets", {entry.begin, entry.end}}};
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw InputError(std::string("safetensors header: ") + e.what());  // invalid UTF-8 name
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void write_header(OutputFile& out, const std::string& text) {
  const uint64_t n_bytes = text.size();
  out.write(&n_bytes, 8);
  out.write(text.data(), text.size());
}

void rename_into_place(const fs::path& from, const fs::path& to) {
  std::error_code error;
  fs::rename(from, to, error);
  GPTQ_CHECK(!error, to.string(), ": cannot rename from ", from.filename().string(), ": ",
             error.message());
}

void check_name(const std::string& name) {
  GPTQ_CHECK(name != "__metadata__", "tensor name '__metadata__' is reserved in safetensors");
}

}  // namespace

void save_file(const fs::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
               const std::map<std::string, std::string>& metadata) {
  std::vector<Entry> entries;
  std::vector<at::Tensor> contiguous;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    check_name(name);
    GPTQ_CHECK(seen.insert(name).second, path.string(), ": tensor '", name, "' given twice");
    contiguous.push_back(storable(name, tensor));
    const uint64_t n_bytes = contiguous.back().nbytes();
    entries.push_back({name, tensor.scalar_type(), tensor.sizes().vec(), offset, offset + n_bytes});
    offset += n_bytes;
  }
  fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  const fs::path temp = temp_name(dir, path.filename().string());
  try {
    OutputFile out(temp);
    write_header(out, header_text(entries, metadata));
    fault_point("file-write");
    for (const auto& tensor : contiguous) out.write(tensor.data_ptr(), tensor.nbytes());
    out.finish();
    rename_into_place(temp, path);
  } catch (...) {
    std::error_code ignored;
    fs::remove(temp, ignored);
    throw;
  }
}

struct ShardedWriter::Impl {
  struct Shard {
    std::vector<Entry> entries;
    uint64_t n_bytes = 0;
    fs::path temp_path;  // set once written
  };

  fs::path dir;
  uint64_t max_shard_bytes = 0;
  std::map<std::string, std::string> metadata;
  bool created_dir = false;
  bool committed = false;
  std::set<std::string> names;
  std::vector<Shard> shards;  // the last one is being filled
  fs::path spool_path;
  int spool_fd = -1;
  std::vector<fs::path> temps;  // everything to remove if never committed

  void open_spool() {
    spool_path = temp_name(dir, "spool");
    spool_fd = ::open(spool_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    GPTQ_CHECK(spool_fd >= 0, spool_path.string(), ": cannot create: ", std::strerror(errno));
    temps.push_back(spool_path);
  }

  void spool(const at::Tensor& tensor) {
    const auto* cursor = static_cast<const char*>(tensor.data_ptr());
    size_t remaining = tensor.nbytes();
    while (remaining > 0) {
      ssize_t written = ::write(spool_fd, cursor, std::min<size_t>(remaining, size_t{1} << 30));
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) throw Error(spool_path.string() + ": write failed: " + std::strerror(errno));
      cursor += written;
      remaining -= static_cast<size_t>(written);
    }
  }

  // Writes the shard being filled from the spool and starts an empty one.
  void flush_shard() {
    Shard& shard = shards.back();
    shard.temp_path = temp_name(dir, "shard");
    temps.push_back(shard.temp_path);
    OutputFile out(shard.temp_path);
    write_header(out, header_text(shard.entries, metadata));
    fault_point("shard-write");
    out.append_from(spool_fd, shard.n_bytes);
    out.finish();
    GPTQ_CHECK(::ftruncate(spool_fd, 0) == 0 && ::lseek(spool_fd, 0, SEEK_SET) == 0,
               spool_path.string(), ": cannot reset: ", std::strerror(errno));
    shards.emplace_back();
  }

  void close_spool() {
    if (spool_fd >= 0) ::close(spool_fd);
    spool_fd = -1;
  }

  void remove_temps() {
    close_spool();
    std::error_code ignored;
    for (const auto& path : temps) fs::remove(path, ignored);
    temps.clear();
    if (created_dir) fs::remove(dir, ignored);  // only succeeds when empty
  }
};

ShardedWriter::ShardedWriter(fs::path output_dir, uint64_t max_shard_bytes,
                             std::map<std::string, std::string> metadata)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = std::move(output_dir);
  impl_->max_shard_bytes = max_shard_bytes;
  impl_->metadata = std::move(metadata);
  std::error_code error;
  impl_->created_dir = fs::create_directories(impl_->dir, error);
  GPTQ_CHECK(!error, impl_->dir.string(), ": cannot create directory: ", error.message());
  GPTQ_CHECK(fs::is_directory(impl_->dir), impl_->dir.string(), ": not a directory");
  impl_->open_spool();
  impl_->shards.emplace_back();
}

ShardedWriter::~ShardedWriter() {
  if (impl_ && !impl_->committed) impl_->remove_temps();
}

void ShardedWriter::add(const std::string& name, const at::Tensor& tensor) {
  Impl& impl = *impl_;
  GPTQ_ASSERT(!impl.committed, "add() after commit()");
  check_name(name);
  GPTQ_CHECK(impl.names.insert(name).second, impl.dir.string(), ": tensor '", name,
             "' added twice");
  at::Tensor bytes = storable(name, tensor);
  const uint64_t n_bytes = bytes.nbytes();
  // A cap of 0 means one shard; a tensor over the cap gets a shard of its own.
  if (impl.max_shard_bytes > 0 && !impl.shards.back().entries.empty() &&
      impl.shards.back().n_bytes + n_bytes > impl.max_shard_bytes) {
    impl.flush_shard();
  }
  Impl::Shard& shard = impl.shards.back();
  impl.spool(bytes);
  shard.entries.push_back(
      {name, bytes.scalar_type(), bytes.sizes().vec(), shard.n_bytes, shard.n_bytes + n_bytes});
  shard.n_bytes += n_bytes;
}

std::vector<fs::path> ShardedWriter::commit() {
  Impl& impl = *impl_;
  GPTQ_ASSERT(!impl.committed, "commit() called twice");
  impl.flush_shard();
  impl.shards.pop_back();  // the empty one flush_shard() started
  impl.close_spool();

  const size_t n_shards = impl.shards.size();
  auto shard_name = [&](size_t shard_idx) {
    if (n_shards == 1) return std::string(kSafetensorsFileName);
    char buffer[64];
    std::snprintf(buffer, sizeof(buffer), "model-%05zu-of-%05zu.safetensors", shard_idx + 1,
                  n_shards);
    return std::string(buffer);
  };

  fs::path index_temp;
  if (n_shards > 1) {
    nlohmann::json index;
    uint64_t total_size = 0;
    for (size_t shard_idx = 0; shard_idx < n_shards; ++shard_idx) {
      for (const auto& entry : impl.shards[shard_idx].entries) {
        index["weight_map"][entry.name] = shard_name(shard_idx);
      }
      total_size += impl.shards[shard_idx].n_bytes;
    }
    index["metadata"]["total_size"] = total_size;
    const std::string text = index.dump(2) + "\n";
    index_temp = temp_name(impl.dir, kSafetensorsIndexName);
    impl.temps.push_back(index_temp);
    OutputFile out(index_temp);
    out.write(text.data(), text.size());
    out.finish();
  }

  // Shards first, the index last: a reader that sees the index sees every shard.
  std::vector<fs::path> written;
  const fs::path index_path = impl.dir / kSafetensorsIndexName;
  try {
    for (size_t shard_idx = 0; shard_idx < n_shards; ++shard_idx) {
      rename_into_place(impl.shards[shard_idx].temp_path, impl.dir / shard_name(shard_idx));
      written.push_back(impl.dir / shard_name(shard_idx));
    }
    if (n_shards > 1) {
      rename_into_place(index_temp, index_path);
      written.push_back(index_path);
    }
  } catch (...) {
    // Half an output is worse than none: take back what was renamed.
    std::error_code ignored;
    for (const auto& path : written) fs::remove(path, ignored);
    throw;
  }
  if (n_shards == 1 && fs::exists(index_path)) {
    // A stale index from an earlier run would shadow the single file.
    spdlog::warn("removing stale '{}' (output is a single file)", index_path.string());
    fs::remove(index_path);
  }
  impl.committed = true;
  impl.remove_temps();  // only the spool is left; renamed files no longer exist under temp names
  return written;
}

}  // namespace gptq::io
