#include "gptq/calib/work_dir.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "gptq/core/error.h"

namespace gptq::calib {
namespace {
namespace fs = std::filesystem;

class WorkDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("gptq_work_dir_test_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path dir() const { return root_ / "out.partial"; }

  fs::path root_;
};

const Fingerprint kPrint = {{"bits", "4"}, {"model weights", "fnv1a64:0123"}};

std::string input_error_of(const std::function<void()>& run) {
  try {
    run();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

StepRecord record_of(const std::string& linear) {
  StepRecord record;
  record.layers.push_back({{"name", linear}, {"bits", 4}});
  record.replaced.push_back(linear + ".weight");
  record.zero_points_raised = 3;
  return record;
}

TEST_F(WorkDirTest, DefaultPathIsBesideTheOutput) {
  EXPECT_EQ(WorkDir::default_path(root_ / "model-gptq/"), root_ / "model-gptq.partial");
}

TEST_F(WorkDirTest, StepsSurviveAReopenWithTheSameFingerprint) {
  const at::Tensor packed = at::arange(12, at::kInt).reshape({3, 4});
  const at::Tensor hidden = at::randn({2, 3, 4}).to(at::kBFloat16);
  {
    auto work = WorkDir::open(dir(), /*resume=*/false);
    work->bind(kPrint);
    EXPECT_EQ(work->steps_done(), 0);
    work->commit_step({{"a.qweight", packed}}, hidden, record_of("a"));
    EXPECT_EQ(work->steps_done(), 1);
  }
  EXPECT_TRUE(WorkDir::holds_state(dir()));
  auto work = WorkDir::open(dir(), /*resume=*/true);
  work->bind(kPrint);
  ASSERT_EQ(work->steps_done(), 1);
  EXPECT_FALSE(work->finalizing());
  const StepRecord record = work->record(0);
  EXPECT_EQ(record.replaced, std::vector<std::string>{"a.weight"});
  EXPECT_EQ(record.zero_points_raised, 3);
  EXPECT_EQ(record.layers[0]["name"], "a");
  EXPECT_TRUE(at::equal(work->step_tensors(0)->load("a.qweight"), packed));
  // Bit for bit, in the dtype it was computed in.
  EXPECT_TRUE(at::equal(work->load_input(at::kBFloat16, c10::kCPU), hidden));
}

TEST_F(WorkDirTest, OnlyTheNewestInputIsKept) {
  auto work = WorkDir::open(dir(), false);
  work->bind(kPrint);
  work->commit_step({}, at::zeros({1, 2, 4}), record_of("a"));
  work->commit_step({}, at::ones({1, 2, 4}), record_of("b"));
  EXPECT_FALSE(fs::exists(dir() / "input-00001.safetensors"));
  EXPECT_TRUE(fs::exists(dir() / "input-00002.safetensors"));
}

TEST_F(WorkDirTest, AnUnfinishedRunNeedsResume) {
  {
    auto work = WorkDir::open(dir(), false);
    work->bind(kPrint);
    work->commit_step({}, at::Tensor(), record_of("a"));
  }
  const std::string message = input_error_of([&] { WorkDir::open(dir(), false); });
  EXPECT_NE(message.find("holds an unfinished run (1 step(s) done); add --resume"), std::string::npos) << message;
}

TEST_F(WorkDirTest, AChangedFingerprintIsNamedWithBothValues) {
  {
    auto work = WorkDir::open(dir(), false);
    work->bind(kPrint);
    work->commit_step({}, at::Tensor(), record_of("a"));
  }
  auto work = WorkDir::open(dir(), true);
  const std::string message = input_error_of([&] { work->bind({{"bits", "8"}, {"model weights", "fnv1a64:0123"}}); });
  EXPECT_NE(message.find("bits changed (was 4, now 8)"), std::string::npos) << message;
}

TEST_F(WorkDirTest, ASecondRunOnTheSameDirectoryIsRefused) {
  auto first = WorkDir::open(dir(), false);
  const std::string message = input_error_of([&] { WorkDir::open(dir(), true); });
  EXPECT_NE(message.find("in use by another gptq-quant run"), std::string::npos) << message;
}

TEST_F(WorkDirTest, ResumeWithNothingThereStartsFresh) {
  auto work = WorkDir::open(dir(), true);
  work->bind(kPrint);
  EXPECT_EQ(work->steps_done(), 0);
}

TEST_F(WorkDirTest, LeftoversOfAKilledAttemptAreRemovedAndForeignFilesKept) {
  {
    auto work = WorkDir::open(dir(), false);
    work->bind(kPrint);
    work->commit_step({}, at::zeros({1, 2, 4}), record_of("a"));
  }
  std::ofstream(dir() / ".step-00001.safetensors.tmp-123-4") << "half";
  std::ofstream(dir() / "step-00001.safetensors") << "a killed attempt's";
  std::ofstream(dir() / "notes.txt") << "the user's";
  auto work = WorkDir::open(dir(), true);
  work->bind(kPrint);
  EXPECT_FALSE(fs::exists(dir() / ".step-00001.safetensors.tmp-123-4"));
  EXPECT_FALSE(fs::exists(dir() / "step-00001.safetensors"));
  EXPECT_TRUE(fs::exists(dir() / "input-00001.safetensors"));
  work->remove();
  EXPECT_TRUE(fs::exists(dir() / "notes.txt"));  // only our files go
  EXPECT_FALSE(fs::exists(dir() / "state.json"));
}

TEST_F(WorkDirTest, FinalizingIsDurable) {
  {
    auto work = WorkDir::open(dir(), false);
    work->bind(kPrint);
    work->commit_step({}, at::Tensor(), record_of("a"));
    work->mark_finalizing();
  }
  auto work = WorkDir::open(dir(), true);
  work->bind(kPrint);
  EXPECT_TRUE(work->finalizing());
  work->remove();
  EXPECT_FALSE(fs::exists(dir()));
}

}  // namespace
}  // namespace gptq::calib
