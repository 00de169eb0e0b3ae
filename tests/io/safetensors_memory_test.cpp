// SafetensorsFile::load gives the file pages it copied back: after a load the
// process's resident set holds the copy, not the copy plus the file.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>

#include "gptq/io/safetensors.h"
#include "io/io_test_util.h"

namespace gptq::io {
namespace {

using testing::ScratchDir;

// The large tensor is 16 MiB; everything else the process does between two
// readings (allocator bookkeeping, libtorch's thread pool) stays well under
// the slack.
constexpr int64_t kBigElements = 4 * 1024 * 1024;
constexpr int64_t kSlackBytes = 4 * 1024 * 1024;

struct Resident {
  int64_t total_bytes = 0;
  int64_t file_bytes = 0;  // file-backed (and shmem) pages: where a mapping's pages count
};

// /proc/self/statm "resident" and "shared", in bytes. mincore() would report
// page-cache residency, which a released mapping does not change.
Resident read_resident() {
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0, resident_pages = 0, shared_pages = 0;
  statm >> size_pages >> resident_pages >> shared_pages;
  EXPECT_TRUE(statm) << "cannot read /proc/self/statm";
  const int64_t page = ::sysconf(_SC_PAGESIZE);
  return {resident_pages * page, shared_pages * page};
}

// Small tensors either side of the large one, so it starts and ends inside
// pages it shares with them.
std::vector<std::pair<std::string, at::Tensor>> three_tensors() {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(7);
  return {{"head", at::randn({1000}, generator)},
          {"big", at::randn({kBigElements}, generator)},
          {"tail", at::randn({333}, generator)}};
}

bool skip_without_proc() {
#if defined(__linux__)
  return false;
#else
  return true;
#endif
}

TEST(SafetensorsMemory, LoadKeepsOnlyTheCopyResident) {
  if (skip_without_proc()) GTEST_SKIP() << "needs Linux /proc/self/statm";
  ScratchDir dir;
  const auto tensors = three_tensors();
  save_file(dir / "rss.safetensors", tensors);
  for (auto dtype : {c10::kFloat, c10::kHalf}) {
    SCOPED_TRACE(c10::toString(dtype));
    // A fresh mapping each time, so no page of it is resident yet; loading the
    // small tensor first faults in libtorch's copy kernels (file-backed code).
    auto file = SafetensorsFile::open(dir / "rss.safetensors");
    const int64_t big_bytes = static_cast<int64_t>(file->find("big")->nbytes());
    file->load("tail", dtype);
    const Resident before = read_resident();
    at::Tensor loaded = file->load("big", dtype);
    const Resident after = read_resident();
    EXPECT_TRUE(at::equal(loaded, tensors[1].second.to(dtype)));
    const int64_t copy_bytes = static_cast<int64_t>(loaded.nbytes());
    // Without the release the file pages alone add big_bytes here.
    EXPECT_LT(after.file_bytes - before.file_bytes, kSlackBytes)
        << "file pages of the " << big_bytes << "-byte tensor stayed resident";
    EXPECT_LT(after.total_bytes - before.total_bytes, copy_bytes + kSlackBytes)
        << "resident set grew beyond the copy of " << copy_bytes << " bytes";
  }
}

TEST(SafetensorsMemory, ViewsAndNeighboursReadBackAfterARelease) {
  if (skip_without_proc()) GTEST_SKIP() << "needs Linux /proc/self/statm";
  ScratchDir dir;
  const auto tensors = three_tensors();
  save_file(dir / "rss.safetensors", tensors);
  auto file = SafetensorsFile::open(dir / "rss.safetensors");

  // Views taken and read before the load; the release covers the pages the
  // large tensor shares with them, and reading them again faults them back.
  at::Tensor head_view = file->view("head");
  at::Tensor big_view = file->view("big");
  at::Tensor tail_view = file->view("tail");
  ASSERT_TRUE(at::equal(head_view, tensors[0].second));
  ASSERT_TRUE(at::equal(tail_view, tensors[2].second));

  at::Tensor big = file->load("big");
  EXPECT_TRUE(at::equal(head_view, tensors[0].second));
  EXPECT_TRUE(at::equal(big_view, tensors[1].second));
  EXPECT_TRUE(at::equal(tail_view, tensors[2].second));
  EXPECT_TRUE(at::equal(big, tensors[1].second));
  EXPECT_TRUE(at::equal(file->load("head"), tensors[0].second));
  EXPECT_TRUE(at::equal(file->load("tail"), tensors[2].second));
  // The loaded copy owns its memory: writing it leaves the file untouched.
  big.fill_(0);
  EXPECT_TRUE(at::equal(file->load("big"), tensors[1].second));
}

}  // namespace
}  // namespace gptq::io
