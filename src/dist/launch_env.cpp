// Reading the launcher's variables, and how rows split across ranks.
#include <cstdlib>
#include <string>

#include "gptq/core/error.h"
#include "gptq/dist/communicator.h"

namespace gptq::dist {
namespace {

const char* env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

int env_int(const char* name, int fallback, int min_value) {
  const char* value = env(name);
  if (value == nullptr) return fallback;
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(value, &end, 10);
  GPTQ_CHECK(end != value && *end == '\0' && errno == 0 && parsed >= min_value && parsed <= 1 << 30, name, "='",
             value, "' is not an integer >= ", min_value);
  return static_cast<int>(parsed);
}

}  // namespace

std::optional<LaunchInfo> launch_from_env() {
  LaunchInfo info;
  if (env("WORLD_SIZE") != nullptr || env("RANK") != nullptr) {
    info.launcher = "torchrun";
    info.world_size = env_int("WORLD_SIZE", 1, 1);
    info.rank = env_int("RANK", 0, 0);
    info.local_rank = env_int("LOCAL_RANK", info.rank, 0);
  } else if (env("SLURM_NTASKS") != nullptr && env("SLURM_PROCID") != nullptr) {
    info.launcher = "slurm";
    info.world_size = env_int("SLURM_NTASKS", 1, 1);
    info.rank = env_int("SLURM_PROCID", 0, 0);
    info.local_rank = env_int("SLURM_LOCALID", 0, 0);
  } else if (env("OMPI_COMM_WORLD_SIZE") != nullptr && env("OMPI_COMM_WORLD_RANK") != nullptr) {
    info.launcher = "openmpi";
    info.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1, 1);
    info.rank = env_int("OMPI_COMM_WORLD_RANK", 0, 0);
    info.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0, 0);
  } else {
    return std::nullopt;
  }
  GPTQ_CHECK(info.rank < info.world_size, info.launcher, " launch: rank ", info.rank, " is outside a world of ",
             info.world_size);
  if (info.world_size == 1) return std::nullopt;
  if (const char* addr = env("MASTER_ADDR")) info.master_addr = addr;
  GPTQ_CHECK(info.launcher != "torchrun" || env("MASTER_ADDR") != nullptr,
             "RANK/WORLD_SIZE are set but MASTER_ADDR is not: launch with torchrun or set MASTER_ADDR and MASTER_PORT");
  info.master_port = env_int("MASTER_PORT", info.master_port, 1);
  GPTQ_CHECK(info.master_port <= 65535, "MASTER_PORT=", info.master_port, " is not a TCP port");
  return info;
}

RowRange rows_of_rank(int64_t n_rows, int rank, int world_size) {
  GPTQ_ASSERT(world_size > 0 && rank >= 0 && rank < world_size, "rank ", rank, " of ", world_size);
  const int64_t base = n_rows / world_size;
  const int64_t extra = n_rows % world_size;
  return {rank * base + std::min<int64_t>(rank, extra), base + (rank < extra ? 1 : 0)};
}

std::vector<int64_t> rows_per_rank(int64_t n_rows, int world_size) {
  std::vector<int64_t> sizes;
  for (int rank = 0; rank < world_size; ++rank) sizes.push_back(rows_of_rank(n_rows, rank, world_size).count);
  return sizes;
}

}  // namespace gptq::dist
