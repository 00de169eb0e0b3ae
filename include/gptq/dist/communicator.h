#pragma once
// Data-parallel collectives between the processes of one job, on libtorch's
// own c10d engine (never a home-made transport).
//
// A launcher (torchrun, srun, mpirun, or anything that sets the same
// variables) starts one process per rank; launch_from_env() reads who we are
// and where rank 0's rendezvous store listens, connect() builds the
// c10d::TCPStore (rank 0 serves it) and the backend: ProcessGroupGloo for CPU
// tensors, ProcessGroupNCCL for CUDA ones when libtorch has CUDA. The c10d and
// gloo headers stay inside src/dist/c10d_communicator.cpp; everything else
// sees this interface only.
//
// Every collective blocks until it completes on all ranks or fails. A peer
// that died (SIGKILL, OOM) closes its sockets, so the survivors fail at the
// next collective with a RuntimeError naming this rank, the collective and
// the peer's fate, never a hang; a peer that stops answering while alive
// fails them after the timeout given to connect().
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace gptq::dist {

// Who this process is in a multi-process launch.
struct LaunchInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher;  // which variables said so: "torchrun", "slurm" or "openmpi"
};

// The launch this process belongs to, from RANK/WORLD_SIZE/LOCAL_RANK/
// MASTER_ADDR/MASTER_PORT (torchrun and most launchers), else SLURM_PROCID/
// SLURM_NTASKS/SLURM_LOCALID, else OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK (the
// last two take MASTER_ADDR/MASTER_PORT when set, else 127.0.0.1:29500).
// nullopt: none set, or a world of one. InputError for a malformed or
// inconsistent value (rank outside the world, a non-numeric port).
std::optional<LaunchInfo> launch_from_env();

// What the collectives cost so far (for the report and the benchmark).
struct CommStats {
  int64_t calls = 0;
  int64_t bytes = 0;     // payload bytes this rank contributed
  double seconds = 0;    // wall time spent inside collectives (includes waiting for slower ranks)
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend_name() const = 0;

  // Elementwise sum over all ranks, in place; `what` names it in errors.
  virtual void all_reduce_sum(at::Tensor& tensor, const std::string& what) = 0;
  // Every rank's `part` concatenated along dim 0 in rank order. Parts may
  // differ in their first dimension (sizes[r] is rank r's, known to all
  // ranks); the rest of the shape and the dtype must agree.
  virtual at::Tensor all_gather_rows(const at::Tensor& part, const std::vector<int64_t>& sizes,
                                     const std::string& what) = 0;
  virtual void barrier(const std::string& what) = 0;

  const CommStats& stats() const { return stats_; }

 protected:
  CommStats stats_;
};

// Joins the job: rendezvous through rank 0's TCPStore at master_addr:
// master_port, then the backend for `device`'s tensors. Every collective
// (and the rendezvous) fails after `timeout`. RuntimeError when the store or
// a peer cannot be reached.
std::unique_ptr<Communicator> connect(const LaunchInfo& launch, c10::Device device,
                                      std::chrono::milliseconds timeout);

// Rows [begin, end) of `n_rows` that rank `rank` of `world_size` owns:
// contiguous, sizes differing by at most one, the first ranks the larger.
struct RowRange {
  int64_t begin = 0;
  int64_t count = 0;
};
RowRange rows_of_rank(int64_t n_rows, int rank, int world_size);
std::vector<int64_t> rows_per_rank(int64_t n_rows, int world_size);

}  // namespace gptq::dist
