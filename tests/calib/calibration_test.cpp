#include "gptq/calib/calibration.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "gptq/core/error.h"

namespace gptq::calib {
namespace {

namespace fs = std::filesystem;

class CalibrationFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gptq_calib_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& content) {
    fs::path path = dir_ / name;
    std::ofstream(path) << content;
    return path;
  }
  fs::path dir_;
};

// A stand-in tokenizer: one id per byte, so the expected stream is obvious.
std::vector<int32_t> byte_encode(std::string_view text) {
  return std::vector<int32_t>(text.begin(), text.end());
}

std::string ids_text(int n) {
  std::string text;
  for (int idx = 0; idx < n; ++idx) text += std::to_string(idx) + (idx % 10 == 9 ? "\n" : " ");
  return text;
}

TEST_F(CalibrationFiles, WhitespaceIdsAreAStreamAndWindowsAreContiguousSlices) {
  auto windows = load_calibration(write("ids.txt", ids_text(100)), nullptr, 8, 10, 3);
  EXPECT_EQ(windows.format, "ids");
  EXPECT_EQ(windows.n_stream_tokens, 100);
  ASSERT_EQ(windows.input_ids.sizes(), (std::vector<int64_t>{8, 10}));
  for (int row = 0; row < 8; ++row) {
    const int64_t start = windows.input_ids[row][0].item<int64_t>();
    EXPECT_GE(start, 0);
    EXPECT_LT(start, 90);  // start in [0, n_tokens - seqlen)
    EXPECT_TRUE(windows.input_ids[row].equal(at::arange(start, start + 10, at::kLong)));
  }
}

TEST_F(CalibrationFiles, SameSeedSameWindowsOtherSeedOtherWindows) {
  auto file = write("ids.json", "[" + [] {
    std::string s;
    for (int idx = 0; idx < 1000; ++idx) s += (idx ? "," : "") + std::to_string(idx);
    return s;
  }() + "]");
  auto a = load_calibration(file, nullptr, 16, 32, 7).input_ids;
  auto b = load_calibration(file, nullptr, 16, 32, 7).input_ids;
  auto c = load_calibration(file, nullptr, 16, 32, 8).input_ids;
  EXPECT_TRUE(a.equal(b));
  EXPECT_FALSE(a.equal(c));
}

TEST_F(CalibrationFiles, TextAndJsonlGoThroughTheTokenizer) {
  const std::string text(200, 'a');
  auto plain = load_calibration(write("t.txt", "hello " + text), byte_encode, 2, 50, 0);
  EXPECT_EQ(plain.format, "text");
  EXPECT_EQ(plain.n_stream_tokens, 206);
  auto jsonl = load_calibration(write("t.jsonl", "{\"text\": \"" + text + "\"}\n{\"text\": \"bb\"}\n"),
                                byte_encode, 2, 50, 0);
  EXPECT_EQ(jsonl.format, "jsonl");
  EXPECT_EQ(jsonl.n_stream_tokens, 200 + 2 + 2);  // joined with "\n\n"
}

TEST_F(CalibrationFiles, ListOfListsAreReadyWindows) {
  auto windows = load_calibration(write("w.json", "[[1,2,3,4],[5,6,7,8],[9,10,11,12]]"), nullptr, 2, 3, 0);
  EXPECT_EQ(windows.format, "windows");
  EXPECT_TRUE(windows.input_ids.equal(at::tensor({1, 2, 3, 5, 6, 7}, at::kLong).view({2, 3})));
}

// `--calib windows.json` of 512-token windows under the default --seqlen 2048:
// the windows set the length (and the count), the flags only cap them.
TEST_F(CalibrationFiles, ReadyWindowsSetTheirOwnLengthAndCount) {
  const fs::path file = write("w.json", "[[1,2],[3,4],[5,6]]");
  auto windows = load_calibration(file, nullptr, 128, 2048, 0);
  EXPECT_EQ(windows.format, "windows");
  EXPECT_EQ(windows.n_stream_tokens, 0);
  EXPECT_TRUE(windows.input_ids.equal(at::tensor({1, 2, 3, 4, 5, 6}, at::kLong).view({3, 2})));
  EXPECT_EQ(load_calibration(file, nullptr, 2, 2048, 0).input_ids.sizes(), (std::vector<int64_t>{2, 2}));
  // A --seqlen shorter than the windows cuts them all.
  auto cut = load_calibration(write("long.json", "[[1,2,3,4],[5,6,7,8]]"), nullptr, 128, 3, 0).input_ids;
  EXPECT_TRUE(cut.equal(at::tensor({1, 2, 3, 5, 6, 7}, at::kLong).view({2, 3})));
}

TEST_F(CalibrationFiles, UnequalReadyWindowsNameTheFirstOdd) {
  const fs::path file = write("uneven.json", "[[1,2,3,4],[5,6,7,8],[9,10,11],[12]]");
  try {
    load_calibration(file, nullptr, 128, 2048, 0);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("uneven.json"), std::string::npos) << message;
    EXPECT_NE(message.find("window 2 has 3 tokens, window 0 has 4"), std::string::npos) << message;
  }
  // Cut to a --seqlen every window reaches, or to the windows before the odd one, they are equal.
  EXPECT_EQ(load_calibration(file, nullptr, 3, 3, 0).input_ids.sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(load_calibration(file, nullptr, 2, 2048, 0).input_ids.sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_THROW(load_calibration(write("one.json", "[[7],[8]]"), nullptr, 2, 2048, 0), InputError);
  EXPECT_THROW(load_calibration(write("flat_row.json", "[[1,2],3]"), nullptr, 2, 2048, 0), InputError);
}

TEST_F(CalibrationFiles, TooShortIsAClearInputError) {
  auto file = write("short.txt", ids_text(20));
  try {
    load_calibration(file, nullptr, 4, 20, 0);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("short.txt"), std::string::npos) << message;
    EXPECT_NE(message.find("20 tokens"), std::string::npos) << message;
    EXPECT_NE(message.find("--seqlen 20"), std::string::npos) << message;
  }
}

TEST_F(CalibrationFiles, BadInputsAreInputErrors) {
  EXPECT_THROW(load_calibration(dir_ / "missing.txt", byte_encode, 1, 4, 0), InputError);
  EXPECT_THROW(load_calibration(write("empty.txt", "  \n"), byte_encode, 1, 4, 0), InputError);
  EXPECT_THROW(load_calibration(write("neg.json", "[1, -2, 3, 4, 5, 6]"), nullptr, 1, 4, 0), InputError);
  EXPECT_THROW(load_calibration(write("text.txt", std::string(100, 'x')), nullptr, 1, 4, 0), InputError);
  EXPECT_THROW(sample_windows({1, 2, 3, 4, 5}, 0, 2, 0), InputError);
}

}  // namespace
}  // namespace gptq::calib
