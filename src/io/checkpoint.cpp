// Checkpoint: the tensors of a single .safetensors file or of a sharded
// directory described by model.safetensors.index.json.
#include <fstream>
#include <iterator>
#include <sstream>

#include "gptq/core/error.h"
#include "gptq/io/json.h"
#include "gptq/io/safetensors.h"

namespace gptq::io {
namespace {

constexpr uint64_t kMaxIndexBytes = 100'000'000;

std::string read_text_file(const std::filesystem::path& path) {
  std::error_code error;
  const auto size = std::filesystem::file_size(path, error);
  GPTQ_CHECK(!error, path.string(), ": cannot read: ", error.message());
  GPTQ_CHECK(size <= kMaxIndexBytes, path.string(), ": ", size, " bytes is too large for an index");
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in.good(), path.string(), ": cannot open");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// weight_map of an index file: tensor name -> shard file name (relative).
std::map<std::string, std::string> read_weight_map(const std::filesystem::path& index_path) {
  const std::string where = index_path.string();
  nlohmann::json index = parse_json_strict(read_text_file(index_path), where);
  GPTQ_CHECK(index.is_object(), where, ": index is not a JSON object");
  auto map_it = index.find("weight_map");
  GPTQ_CHECK(map_it != index.end() && map_it->is_object(), where,
             ": missing 'weight_map' object");
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : map_it->items()) {
    GPTQ_CHECK(shard.is_string(), where, ": weight_map entry for ", quote_for_error(name), " is not a string");
    const std::filesystem::path shard_path = shard.get<std::string>();
    bool escapes = shard_path.empty() || shard_path.is_absolute();
    for (const auto& part : shard_path) escapes = escapes || part == "..";
    GPTQ_CHECK(!escapes, where, ": shard ", quote_for_error(shard_path.string()), " for tensor ",
               quote_for_error(name), " is not a file name inside the checkpoint directory");
    weight_map.emplace(name, shard_path.string());
  }
  return weight_map;
}

}  // namespace

Checkpoint Checkpoint::open(const std::filesystem::path& dir_or_file) {
  namespace fs = std::filesystem;
  Checkpoint checkpoint;
  checkpoint.root_ = dir_or_file;
  auto add_file = [&](std::shared_ptr<SafetensorsFile> file) {
    const size_t file_idx = checkpoint.files_.size();
    for (const auto& info : file->tensors()) {
      auto [it, inserted] = checkpoint.owner_.emplace(info.name, file_idx);
      GPTQ_CHECK(inserted, dir_or_file.string(), ": tensor ", quote_for_error(info.name), " is in both ",
                 checkpoint.files_[it->second]->path().filename().string(), " and ",
                 file->path().filename().string());
    }
    checkpoint.files_.push_back(std::move(file));
  };

  GPTQ_CHECK(fs::exists(dir_or_file), dir_or_file.string(), ": no such file or directory");
  if (!fs::is_directory(dir_or_file)) {
    add_file(SafetensorsFile::open(dir_or_file));
    return checkpoint;
  }
  const fs::path index_path = dir_or_file / kSafetensorsIndexName;
  if (!fs::exists(index_path)) {
    GPTQ_CHECK(fs::exists(dir_or_file / kSafetensorsFileName), dir_or_file.string(), ": neither ",
               kSafetensorsFileName, " nor ", kSafetensorsIndexName, " found");
    add_file(SafetensorsFile::open(dir_or_file / kSafetensorsFileName));
    return checkpoint;
  }

  const std::map<std::string, std::string> weight_map = read_weight_map(index_path);
  // Shards open in file-name order, so files() walks model-00001.. first.
  std::map<std::string, std::string> first_tensor;  // shard name -> a tensor it holds
  for (const auto& [name, shard] : weight_map) first_tensor.emplace(shard, name);
  std::map<std::string, size_t> shard_index;  // shard name -> index into files_
  for (const auto& [shard, name] : first_tensor) {
    const fs::path shard_path = dir_or_file / shard;
    GPTQ_CHECK(fs::exists(shard_path), index_path.string(), ": shard ", quote_for_error(shard),
               " (holding tensor ", quote_for_error(name), ") is missing");
    shard_index.emplace(shard, checkpoint.files_.size());
    add_file(SafetensorsFile::open(shard_path));
  }
  for (const auto& [name, shard] : weight_map) {
    const SafetensorsFile& file = *checkpoint.files_[shard_index.at(shard)];
    GPTQ_CHECK(file.contains(name), index_path.string(), ": index places tensor ",
               quote_for_error(name), " in ", quote_for_error(shard),
               " but that shard has no such tensor");
  }
  return checkpoint;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> result;
  result.reserve(owner_.size());
  for (const auto& [name, file_idx] : owner_) result.push_back(name);
  return result;
}

bool Checkpoint::contains(const std::string& name) const { return owner_.count(name) != 0; }

const SafetensorsFile& Checkpoint::file_of(const std::string& name) const {
  auto it = owner_.find(name);
  GPTQ_CHECK(it != owner_.end(), root_.string(), ": no tensor ", quote_for_error(name));
  return *files_[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  return *file_of(name).find(name);
}

at::Tensor Checkpoint::load(const std::string& name, std::optional<c10::ScalarType> dtype,
                            c10::Device device) const {
  return file_of(name).load(name, dtype, device);
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& file : files_) {
    for (const auto& info : file->tensors()) total += info.nbytes();
  }
  return total;
}

}  // namespace gptq::io
