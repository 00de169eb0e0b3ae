#include "gptq/calib/run_fingerprint.h"

#include <fstream>
#include <iterator>

#include "gptq/core/error.h"
#include "gptq/core/version.h"

#include <nlohmann/json.hpp>

namespace gptq::calib {
namespace fs = std::filesystem;

namespace {

std::string file_digest(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in.good(), path.string(), ": cannot read");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return "fnv1a64:" + hex64(fnv1a64(bytes.data(), bytes.size()));
}

// Name, size and header bytes of every file: cheap, and it changes whenever a
// tensor's dtype, shape or position does.
std::string weights_digest(const io::Checkpoint& checkpoint) {
  uint64_t hash = fnv1a64(nullptr, 0);
  for (const auto& file : checkpoint.files()) {
    const fs::path& path = file->path();
    const std::string name = path.filename().string();
    hash = fnv1a64(name.data(), name.size(), hash);
    const uint64_t size = fs::file_size(path);
    hash = fnv1a64(&size, sizeof size, hash);
    std::ifstream in(path, std::ios::binary);
    uint64_t header_size = 0;
    in.read(reinterpret_cast<char*>(&header_size), 8);
    GPTQ_CHECK(in.good() && header_size < size, path.string(), ": cannot read its header");
    std::string header(header_size, '\0');
    in.read(header.data(), static_cast<std::streamsize>(header_size));
    GPTQ_CHECK(in.good(), path.string(), ": cannot read its header");
    hash = fnv1a64(header.data(), header.size(), hash);
  }
  return "fnv1a64:" + hex64(hash);
}

std::string ids_digest(const at::Tensor& ids) {
  if (!ids.defined()) return "none";
  const at::Tensor flat = ids.to(c10::kCPU, c10::kLong).contiguous();
  const std::string shape = std::to_string(flat.size(0)) + "x" + std::to_string(flat.size(1));
  return shape + " fnv1a64:" + hex64(fnv1a64(flat.data_ptr(), flat.nbytes()));
}

std::string text(bool value) { return value ? "true" : "false"; }
std::string text(double value) { return nlohmann::json(value).dump(); }  // shortest exact form: "0.01"

}  // namespace

Fingerprint run_fingerprint(const QuantizeOptions& options, const io::Checkpoint& checkpoint,
                            const at::Tensor& calibration_ids, const std::string& compute,
                            const std::string& module_schemes) {
  const solver::GptqConfig& gptq = options.gptq;
  const model::BlockOptions& block = options.block;
  return {
      {"tool", tool_name() + " " + tool_version()},
      {"model config.json", file_digest(options.model_dir / "config.json")},
      {"model weights", weights_digest(checkpoint)},
      {"calibration tokens", ids_digest(calibration_ids)},
      {"compute", compute},
      {"command", options.method == Method::kRtn ? "rtn" : "quantize"},
      {"format", options.format == "gguf" ? "gguf:" + options.gguf_type : options.format},
      {"bits", std::to_string(gptq.quant.bits)},
      {"group_size", std::to_string(gptq.quant.group_size)},
      {"sym", text(gptq.quant.sym)},
      {"mse", text(gptq.quant.mse)},
      {"desc_act", text(gptq.desc_act)},
      {"static_groups", text(gptq.static_groups)},
      {"damp_percent", text(gptq.damp_percent)},
      {"block_size", std::to_string(gptq.block_size)},
      {"true_sequential", text(options.true_sequential)},
      {"windows_per_chunk", std::to_string(block.batch_chunk)},
      {"max_held_bytes", std::to_string(block.max_held_bytes)},
      {"moe_calibration", block.moe_calibration == model::MoeCalibration::kRouted ? "routed" : "all"},
      {"moe_min_tokens", std::to_string(block.min_expert_tokens_per_input)},
      {"on_solve_failure", options.rtn_on_solve_failure ? "rtn" : "error"},
      {"max_shard_bytes", std::to_string(options.max_shard_bytes)},
      {"module schemes", module_schemes},
  };
}

}  // namespace gptq::calib
