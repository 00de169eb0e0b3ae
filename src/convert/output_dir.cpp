#include "output_dir.h"

#include <unistd.h>

#include "gptq/core/error.h"
#include "gptq/io/durable.h"
#include "gptq/io/safetensors.h"
#include "gptq/pack/checkpoint_writer.h"

namespace gptq::convert {
namespace fs = std::filesystem;

namespace {

// The same shard cap as quantize's default (4 GiB).
constexpr uint64_t kMaxShardBytes = uint64_t{4} << 30;

}  // namespace

OutputDir::OutputDir(fs::path source_dir, fs::path output_dir)
    : source_dir_(std::move(source_dir)), output_dir_(std::move(output_dir)) {
  std::error_code ec;
  GPTQ_CHECK(!fs::exists(output_dir_, ec), "output '", output_dir_.string(),
             "' already exists; choose a new directory or remove it");
  fs::path absolute = fs::absolute(output_dir_).lexically_normal();
  if (absolute.filename().empty()) absolute = absolute.parent_path();
  GPTQ_CHECK(fs::is_directory(absolute.parent_path()), "parent directory of output '", output_dir_.string(),
             "' does not exist");
  temp_dir_ = absolute.parent_path() / (absolute.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(temp_dir_, ec);
  fs::create_directory(temp_dir_);
  shards_ = std::make_unique<io::ShardedWriter>(temp_dir_, kMaxShardBytes);
}

OutputDir::~OutputDir() {
  if (committed_) return;
  shards_.reset();
  std::error_code ec;
  fs::remove_all(temp_dir_, ec);
}

void OutputDir::add(const std::string& name, const at::Tensor& tensor) { shards_->add(name, tensor); }

uint64_t OutputDir::commit(const nlohmann::json& config, const std::optional<nlohmann::json>& quantize_config) {
  GPTQ_ASSERT(!committed_, "commit() called twice");
  shards_->commit();
  io::write_text_durably(temp_dir_ / "config.json", config.dump(2) + "\n");
  if (quantize_config) io::write_text_durably(temp_dir_ / "quantize_config.json", quantize_config->dump(2) + "\n");
  for (const auto& entry : fs::directory_iterator(source_dir_)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || pack::is_weight_file(name) || name.starts_with(".")) continue;
    fs::copy_file(entry.path(), temp_dir_ / name, fs::copy_options::overwrite_existing);
  }
  std::error_code ec;
  GPTQ_CHECK(!fs::exists(output_dir_, ec), "output '", output_dir_.string(),
             "' appeared while converting; nothing was written");
  io::sync_directory(temp_dir_);
  fs::rename(temp_dir_, output_dir_);
  committed_ = true;
  io::sync_directory(output_dir_.parent_path().empty() ? fs::path(".") : output_dir_.parent_path());
  uint64_t total = 0;
  for (const auto& entry : fs::directory_iterator(output_dir_)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

}  // namespace gptq::convert
