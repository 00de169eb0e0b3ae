#include "gptq/calib/data_parallel.h"

#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"

namespace gptq::calib {
namespace fs = std::filesystem;
namespace {

// A rank's own offload directory, gone at the end (its files were unlinked at creation).
void remove_quietly(const fs::path& dir) {
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

}  // namespace

DataParallel::DataParallel(const QuantizeOptions& options)
    : launch_(options.launch), timeout_(options.dist_timeout) {
  GPTQ_CHECK(!options.launch || !options.resume, "--resume continues a single-process run; a data-parallel run (",
             options.launch->world_size, " processes) starts from the beginning");
}

std::string DataParallel::fingerprint_note() const {
  return launch_ ? " in " + std::to_string(launch_->world_size) + " processes" : "";
}

at::Tensor DataParallel::join(const at::Tensor& ids, const fs::path& work_dir, c10::Device device) {
  offload_dir_ = work_dir;
  const bool calibrated = ids.defined();
  n_windows_ = calibrated ? ids.size(0) : 0;
  if (!launch_) return ids;
  const int rank = launch_->rank;
  const int world = launch_->world_size;
  GPTQ_CHECK(!calibrated || ids.size(0) >= world, "--nsamples ", n_windows_,
             " gives fewer calibration windows than the ", world, " processes of the data-parallel run");
  at::Tensor local_ids = ids;
  if (calibrated) {
    const dist::RowRange range = dist::rows_of_rank(ids.size(0), rank, world);
    local_ids = ids.narrow(0, range.begin, range.count);
    n_windows_ = range.count;
  }
  // Activations offloaded by the other ranks go beside rank 0's work directory, never into it.
  if (!writes()) offload_dir_ = work_dir.string() + ".rank" + std::to_string(rank);
  comm_ = dist::connect(*launch_, device, timeout_);
  return local_ids;
}

void DataParallel::discard() const {
  if (!writes()) remove_quietly(offload_dir_);
}

void DataParallel::finish(nlohmann::json& report) const {
  if (!comm_) return;
  // Every process ends together: a rank 0 that failed to write fails them all.
  comm_->barrier("the output's commit by rank 0");
  discard();
  const dist::CommStats& stats = comm_->stats();
  report["distributed"] = {{"rank", comm_->rank()},
                           {"world_size", comm_->world_size()},
                           {"launcher", launch_->launcher},
                           {"backend", comm_->backend_name()},
                           {"windows", n_windows_},
                           {"collectives", stats.calls},
                           {"collective_bytes", stats.bytes},
                           {"collective_s", stats.seconds}};
  spdlog::info("data-parallel: {} processes ({}), {} collectives moved {} from this rank in {}", comm_->world_size(),
               comm_->backend_name(), stats.calls, human_bytes(double(stats.bytes)), human_seconds(stats.seconds));
}

}  // namespace gptq::calib
