#pragma once
// The output directory of a conversion: tensors in safetensors shards
// (io::ShardedWriter), the given config.json (and quantize_config.json when
// asked), every non-weight file of the source copied byte for byte. Written
// under "<output>.tmp-<pid>" and renamed in commit(); the destructor removes
// the temporary directory when commit() was never reached. An existing output
// is an InputError (exit 2), checked in the constructor before any work.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace gptq::io {
class ShardedWriter;
}

namespace gptq::convert {

class OutputDir {
 public:
  OutputDir(std::filesystem::path source_dir, std::filesystem::path output_dir);
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  void add(const std::string& name, const at::Tensor& tensor);
  // Returns the output's total bytes.
  uint64_t commit(const nlohmann::json& config, const std::optional<nlohmann::json>& quantize_config);

 private:
  std::filesystem::path source_dir_;
  std::filesystem::path output_dir_;
  std::filesystem::path temp_dir_;
  std::unique_ptr<io::ShardedWriter> shards_;
  bool committed_ = false;
};

}  // namespace gptq::convert
