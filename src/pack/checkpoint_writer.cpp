#include "gptq/pack/checkpoint_writer.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <system_error>

#include "gptq/core/error.h"
#include "gptq/core/fault_point.h"
#include "gptq/core/log.h"
#include "gptq/io/durable.h"
#include "gptq/io/safetensors.h"

namespace gptq::pack {
namespace fs = std::filesystem;

namespace {

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  GPTQ_CHECK(in.good(), "cannot read '", path.string(), "'");
  auto parsed = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  GPTQ_CHECK(!parsed.is_discarded() && parsed.is_object(), "'", path.string(),
             "' is not a JSON object");
  return parsed;
}

void write_json(const fs::path& path, const nlohmann::json& value) {
  io::write_text_durably(path, value.dump(2) + "\n");
}

uint64_t directory_bytes(const fs::path& dir) {
  uint64_t total = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

// "<output>.tmp-<pid>" directories of runs that were killed (their pid is
// gone): a kill -9 runs no destructor, so nobody else removes them.
void remove_stale_temporaries(const fs::path& parent, const std::string& output_name) {
  const std::string stem = output_name + ".tmp-";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(parent, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(stem) || !entry.is_directory(ec)) continue;
    const std::string pid_text = name.substr(stem.size());
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    spdlog::info("removing '{}', left by a run that was killed", entry.path().string());
    fs::remove_all(entry.path(), ec);
  }
}

}  // namespace

bool is_weight_file(const std::string& file_name) {
  auto ends_with = [&](const std::string& suffix) {
    return file_name.size() >= suffix.size() &&
           file_name.compare(file_name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".safetensors") || ends_with(".bin") || ends_with(".pt") ||
         ends_with(".pth") || ends_with(".gguf") || ends_with(".index.json") ||
         file_name == "config.json" || file_name == "quantize_config.json" ||
         file_name == "quant_log.csv";
}

CheckpointWriter::CheckpointWriter(fs::path source_dir, fs::path output_dir,
                                   const OutputFormat& format, uint64_t max_shard_bytes)
    : source_dir_(std::move(source_dir)), output_dir_(std::move(output_dir)), format_(format) {
  GPTQ_CHECK(fs::is_regular_file(source_dir_ / "config.json"), "'", source_dir_.string(),
             "' has no config.json");
  std::error_code ec;
  GPTQ_CHECK(!fs::exists(output_dir_, ec), "output '", output_dir_.string(),
             "' already exists; choose a new directory or remove it");
  fs::path absolute = fs::absolute(output_dir_).lexically_normal();
  if (absolute.filename().empty()) absolute = absolute.parent_path();
  GPTQ_CHECK(fs::is_directory(absolute.parent_path()), "parent directory of output '",
             output_dir_.string(), "' does not exist");
  remove_stale_temporaries(absolute.parent_path(), absolute.filename().string());
  temp_dir_ = absolute.parent_path() /
              (absolute.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(temp_dir_, ec);
  fs::create_directory(temp_dir_);
  shards_ = std::make_unique<io::ShardedWriter>(temp_dir_, max_shard_bytes);
}

CheckpointWriter::~CheckpointWriter() {
  if (committed_) return;
  shards_.reset();  // drops the writer's own temporary files first
  std::error_code ec;
  fs::remove_all(temp_dir_, ec);
}

void CheckpointWriter::add_linear(const std::string& prefix, const SolvedLinear& solved,
                                  const solver::Scheme& scheme) {
  for (auto& [name, tensor] : format_.pack(prefix, solved, scheme)) shards_->add(name, tensor);
}

void CheckpointWriter::add(const std::string& name, const at::Tensor& tensor) {
  shards_->add(name, tensor);
}

uint64_t CheckpointWriter::commit(const solver::SchemeResolver& schemes, const RunSettings& settings) {
  GPTQ_ASSERT(!committed_, "commit() called twice");
  shards_->commit();

  const nlohmann::json quantization = format_.quantization_config(schemes, settings);
  nlohmann::json config = read_json(source_dir_ / "config.json");
  config["quantization_config"] = quantization;
  if (settings.untie_word_embeddings) config["tie_word_embeddings"] = false;
  write_json(temp_dir_ / "config.json", config);
  write_json(temp_dir_ / "quantize_config.json", quantization);

  for (const auto& entry : fs::directory_iterator(source_dir_)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || is_weight_file(name) || name.starts_with(".")) continue;
    fs::copy_file(entry.path(), temp_dir_ / name, fs::copy_options::overwrite_existing);
  }

  std::error_code ec;
  GPTQ_CHECK(!fs::exists(output_dir_, ec), "output '", output_dir_.string(),
             "' appeared while quantizing; nothing was written");
  io::sync_directory(temp_dir_);
  fault_point("before-rename");
  fs::rename(temp_dir_, output_dir_);
  committed_ = true;
  io::sync_directory(output_dir_.parent_path().empty() ? fs::path(".") : output_dir_.parent_path());
  return directory_bytes(output_dir_);
}

}  // namespace gptq::pack
