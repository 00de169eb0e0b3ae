// Collectives between two ranks of one process (a thread each, each with its
// own TCPStore client and Gloo process group, as two processes would have),
// and the launch variables as torchrun, srun and mpirun set them.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <map>
#include <thread>

#include "gptq/core/error.h"
#include "gptq/dist/communicator.h"
#include "testing/free_port.h"

namespace gptq::dist {
namespace {

using gptq::testing::free_port;

constexpr const char* kLaunchVariables[] = {
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID",
    "SLURM_LOCALID", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"};

// Sets exactly these launch variables for one scope, then restores the previous ones.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::map<std::string, std::string>& values) {
    for (const char* name : kLaunchVariables) {
      if (const char* old = std::getenv(name)) saved_[name] = old;
      ::unsetenv(name);
    }
    for (const auto& [name, value] : values) ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    for (const char* name : kLaunchVariables) ::unsetenv(name);
    for (const auto& [name, value] : saved_) ::setenv(name.c_str(), value.c_str(), 1);
  }

 private:
  std::map<std::string, std::string> saved_;
};

TEST(LaunchFromEnv, NothingSetOrAWorldOfOneIsASingleProcess) {
  ScopedEnv none({});
  EXPECT_FALSE(launch_from_env().has_value());
  ScopedEnv one({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_ADDR", "127.0.0.1"}});
  EXPECT_FALSE(launch_from_env().has_value());
}

TEST(LaunchFromEnv, ReadsTorchrunSlurmAndOpenMpi) {
  {
    ScopedEnv torchrun({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "10.0.0.2"},
                        {"MASTER_PORT", "29511"}});
    const auto info = launch_from_env();
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->launcher, "torchrun");
    EXPECT_EQ(info->rank, 3);
    EXPECT_EQ(info->world_size, 4);
    EXPECT_EQ(info->local_rank, 1);
    EXPECT_EQ(info->master_addr, "10.0.0.2");
    EXPECT_EQ(info->master_port, 29511);
  }
  {
    ScopedEnv slurm({{"SLURM_NTASKS", "2"}, {"SLURM_PROCID", "1"}, {"SLURM_LOCALID", "0"}, {"MASTER_ADDR", "node7"}});
    const auto info = launch_from_env();
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->launcher, "slurm");
    EXPECT_EQ(info->rank, 1);
    EXPECT_EQ(info->master_addr, "node7");
    EXPECT_EQ(info->master_port, 29500);
  }
  {
    ScopedEnv mpi({{"OMPI_COMM_WORLD_SIZE", "8"}, {"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
    const auto info = launch_from_env();
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->launcher, "openmpi");
    EXPECT_EQ(info->rank, 5);
    EXPECT_EQ(info->local_rank, 1);
    EXPECT_EQ(info->master_addr, "127.0.0.1");
  }
}

TEST(LaunchFromEnv, MalformedValuesAreInputErrors) {
  {
    ScopedEnv outside({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}});
    EXPECT_THROW(launch_from_env(), InputError);
  }
  {
    ScopedEnv text({{"RANK", "zero"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}});
    EXPECT_THROW(launch_from_env(), InputError);
  }
  {
    ScopedEnv no_master({{"RANK", "0"}, {"WORLD_SIZE", "2"}});
    EXPECT_THROW(launch_from_env(), InputError);
  }
  {
    ScopedEnv port({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}});
    EXPECT_THROW(launch_from_env(), InputError);
  }
}

TEST(RowsOfRank, ContiguousCoveringAndBalanced) {
  for (int64_t n_rows : {0, 1, 5, 7, 4096}) {
    for (int world : {1, 2, 3, 8}) {
      int64_t next = 0;
      for (int rank = 0; rank < world; ++rank) {
        const RowRange range = rows_of_rank(n_rows, rank, world);
        EXPECT_EQ(range.begin, next);
        EXPECT_LE(range.count, n_rows / world + 1);
        EXPECT_GE(range.count, n_rows / world);
        next += range.count;
      }
      EXPECT_EQ(next, n_rows);
      EXPECT_EQ(rows_per_rank(n_rows, world).size(), static_cast<size_t>(world));
    }
  }
}

constexpr std::chrono::milliseconds kTimeout{20000};

TEST(GlooCommunicator, AllReduceAndGatherBetweenTwoRanks) {
  const int port = free_port();
  auto rank_job = [port](int rank) {
    LaunchInfo launch{rank, 2, rank, "127.0.0.1", port, "test"};
    std::unique_ptr<Communicator> comm = connect(launch, c10::Device(c10::kCPU), kTimeout);
    EXPECT_EQ(comm->backend_name(), "gloo");
    at::Tensor sum = at::full({3, 4}, static_cast<float>(rank + 1));
    comm->all_reduce_sum(sum, "a test sum");
    EXPECT_TRUE(at::equal(sum, at::full({3, 4}, 3.0f)));
    at::Tensor counts = at::tensor({int64_t{10} * (rank + 1)});
    comm->all_reduce_sum(counts, "a test count");
    EXPECT_EQ(counts.item<int64_t>(), 30);
    // Unequal parts (5 rows as 3 + 2) of codes in uint8, gathered in rank order.
    const std::vector<int64_t> sizes = rows_per_rank(5, 2);
    const RowRange mine = rows_of_rank(5, rank, 2);
    const at::Tensor whole = at::arange(5 * 6, at::kByte).reshape({5, 6});
    const at::Tensor gathered = comm->all_gather_rows(whole.narrow(0, mine.begin, mine.count), sizes, "test codes");
    EXPECT_TRUE(at::equal(gathered, whole));
    comm->barrier("the end of the test");
    EXPECT_EQ(comm->stats().calls, 4);
  };
  auto other = std::async(std::launch::async, rank_job, 1);
  rank_job(0);
  other.get();
}

TEST(GlooCommunicator, APeerThatLeavesFailsTheNextCollectiveWithItsName) {
  const int port = free_port();
  std::promise<void> joined;
  auto leaving = std::async(std::launch::async, [&] {
    LaunchInfo launch{1, 2, 1, "127.0.0.1", port, "test"};
    std::unique_ptr<Communicator> comm = connect(launch, c10::Device(c10::kCPU), kTimeout);
    joined.set_value();
    // Destroyed without taking part in the sum: its connections close.
  });
  LaunchInfo launch{0, 2, 0, "127.0.0.1", port, "test"};
  std::unique_ptr<Communicator> comm = connect(launch, c10::Device(c10::kCPU), kTimeout);
  joined.get_future().wait();
  leaving.get();
  at::Tensor value = at::ones({4});
  const auto start = std::chrono::steady_clock::now();
  try {
    comm->all_reduce_sum(value, "the Hessian of model.layers.0.self_attn.q_proj");
    FAIL() << "the collective succeeded without its peer";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("rank 0 of 2"), std::string::npos) << message;
    EXPECT_NE(message.find("model.layers.0.self_attn.q_proj"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, kTimeout);
}

TEST(Connect, NoStoreToJoinFailsAfterTheTimeout) {
  LaunchInfo launch{1, 2, 1, "127.0.0.1", free_port(), "test"};
  EXPECT_THROW(connect(launch, c10::Device(c10::kCPU), std::chrono::milliseconds(1500)), Error);
}

}  // namespace
}  // namespace gptq::dist
