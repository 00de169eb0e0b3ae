// GgufFileWriter / GgufFileReader: a written file read back (every KV kind
// the writer sets, tensor table, bytes, 32-byte alignment, the header bytes
// themselves), a hand-built file holding every GGUF value type, an existing
// output refused, nothing left behind without commit() (and a killed
// writer's temporaries removed by the next one), truncation named.
#include "gptq/gguf/gguf_file.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "gptq/core/error.h"

namespace gptq::gguf {
namespace {

namespace fs = std::filesystem;

class GgufFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gguf_file_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string read_all(const fs::path& path) const {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  fs::path dir_;
};

template <typename T>
T pod_at(const std::string& bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof value);
  return value;
}

TEST_F(GgufFileTest, RoundTripsKvsTensorsAndAlignment) {
  const fs::path out = dir_ / "m.gguf";
  // 3 x 5 float32: 60 bytes, not a multiple of 32, so the next tensor needs padding.
  const at::Tensor f32 = at::arange(15, at::kFloat).reshape({3, 5});
  // Two Q8_0 rows of 32 values: 34 bytes each (fp16 scale + 32 int8).
  const at::Tensor q8 = at::arange(68, at::kInt).remainder(251).to(at::kByte).reshape({2, 34});
  const at::Tensor bias = at::tensor({1.5f, -2.0f, 0.25f});
  uint64_t size = 0;
  {
    GgufFileWriter writer(out);
    writer.set_string("general.architecture", "llama");
    writer.set_u32("llama.block_count", 7);
    writer.set_i32("test.i32", -5);
    writer.set_u64("test.u64", uint64_t{1} << 40);
    writer.set_f32("test.f32", 0.1f);
    writer.set_bool("test.bool", true);
    writer.set_strings("test.strings", {"a", "", "\xe2\x96\x81x"});
    writer.set_f32s("test.f32s", {-1.0f, 0.5f});
    writer.set_i32s("test.i32s", {3, -4, 5});
    writer.set_u32("llama.block_count", 8);  // replaces the value, keeps the position
    writer.add_tensor("a.weight", GgmlType::kF32, {3, 5}, f32);
    writer.add_tensor("b.weight", GgmlType::kQ8_0, {2, 32}, q8);
    writer.add_tensor("c.bias", GgmlType::kF32, {3}, bias);
    EXPECT_EQ(writer.n_tensors(), 3u);
    size = writer.commit();
  }
  EXPECT_EQ(entries(), std::vector<std::string>{"m.gguf"});
  EXPECT_EQ(fs::file_size(out), size);

  const GgufFileReader reader(out);
  const auto& kvs = reader.kvs();
  ASSERT_EQ(kvs.size(), 9u);
  EXPECT_EQ(kvs.at("general.architecture"), "llama");
  EXPECT_EQ(kvs.at("llama.block_count"), 8);
  EXPECT_EQ(kvs.at("test.i32"), -5);
  EXPECT_EQ(kvs.at("test.u64").get<uint64_t>(), uint64_t{1} << 40);
  EXPECT_EQ(kvs.at("test.f32").get<float>(), 0.1f);
  EXPECT_EQ(kvs.at("test.bool"), true);
  EXPECT_EQ(kvs.at("test.strings"), nlohmann::json({"a", "", "\xe2\x96\x81x"}));
  EXPECT_EQ(kvs.at("test.f32s"), nlohmann::json({-1.0, 0.5}));
  EXPECT_EQ(kvs.at("test.i32s"), nlohmann::json({3, -4, 5}));

  const auto& tensors = reader.tensors();
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors[0].name, "a.weight");
  EXPECT_EQ(tensors[0].shape, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(tensors[1].type, GgmlType::kQ8_0);
  EXPECT_EQ(tensors[1].shape, (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(tensors[2].shape, (std::vector<int64_t>{3}));
  for (const auto& tensor : tensors) EXPECT_EQ(tensor.offset % 32, 0u) << tensor.name;
  EXPECT_EQ(tensors[1].offset - tensors[0].offset, 64u);  // 60 bytes padded to 64
  EXPECT_TRUE(at::equal(reader.bytes(tensors[0]).view(at::kFloat).reshape({3, 5}), f32));
  EXPECT_TRUE(at::equal(reader.bytes(tensors[1]), q8));
  EXPECT_TRUE(at::equal(reader.bytes(tensors[2]).view(at::kFloat).reshape({3}), bias));
  // The data ends with the last tensor's padding.
  EXPECT_EQ(size, tensors[2].offset + 32);

  // The header as ggml reads it: magic, version 3, counts, first key in the order set.
  const std::string bytes = read_all(out);
  EXPECT_EQ(bytes.substr(0, 4), "GGUF");
  EXPECT_EQ(pod_at<uint32_t>(bytes, 4), 3u);
  EXPECT_EQ(pod_at<uint64_t>(bytes, 8), 3u);
  EXPECT_EQ(pod_at<uint64_t>(bytes, 16), 9u);
  EXPECT_EQ(pod_at<uint64_t>(bytes, 24), std::string("general.architecture").size());
  EXPECT_EQ(bytes.substr(32, 20), "general.architecture");
  EXPECT_EQ(pod_at<uint32_t>(bytes, 52), static_cast<uint32_t>(GgufValueType::kString));
  // ne of a.weight is [5, 3]: the reverse of the PyTorch shape.
  const size_t info = bytes.find("a.weight");
  ASSERT_NE(info, std::string::npos);
  EXPECT_EQ(pod_at<uint32_t>(bytes, info + 8), 2u);
  EXPECT_EQ(pod_at<uint64_t>(bytes, info + 12), 5u);
  EXPECT_EQ(pod_at<uint64_t>(bytes, info + 20), 3u);
  EXPECT_EQ(pod_at<uint32_t>(bytes, info + 28), static_cast<uint32_t>(GgmlType::kF32));
  EXPECT_EQ(pod_at<uint64_t>(bytes, info + 32), 0u);  // offset within the data section
}

// A file holding every GGUF value type, written by hand as gguf-py would.
TEST_F(GgufFileTest, ReaderDecodesEveryValueType) {
  std::string bytes = "GGUF";
  const auto put = [&bytes](auto value) { bytes.append(reinterpret_cast<const char*>(&value), sizeof value); };
  const auto put_string = [&](const std::string& text) {
    put(uint64_t{text.size()});
    bytes += text;
  };
  const auto put_key = [&](const std::string& key, GgufValueType type) {
    put_string(key);
    put(static_cast<uint32_t>(type));
  };
  put(uint32_t{3});
  put(uint64_t{0});   // tensors
  put(uint64_t{14});  // KVs
  put_key("u8", GgufValueType::kU8), put(uint8_t{200});
  put_key("i8", GgufValueType::kI8), put(int8_t{-100});
  put_key("u16", GgufValueType::kU16), put(uint16_t{60000});
  put_key("i16", GgufValueType::kI16), put(int16_t{-30000});
  put_key("u32", GgufValueType::kU32), put(uint32_t{4000000000u});
  put_key("i32", GgufValueType::kI32), put(int32_t{-2000000000});
  put_key("f32", GgufValueType::kF32), put(1.25f);
  put_key("bool", GgufValueType::kBool), put(uint8_t{0});
  put_key("string", GgufValueType::kString), put_string("text");
  put_key("u64", GgufValueType::kU64), put(uint64_t{1} << 63);
  put_key("i64", GgufValueType::kI64), put(int64_t{-(int64_t{1} << 62)});
  put_key("f64", GgufValueType::kF64), put(-0.125);
  put_key("u16s", GgufValueType::kArray), put(static_cast<uint32_t>(GgufValueType::kU16)), put(uint64_t{2});
  put(uint16_t{1}), put(uint16_t{2});
  put_key("bools", GgufValueType::kArray), put(static_cast<uint32_t>(GgufValueType::kBool)), put(uint64_t{2});
  put(uint8_t{1}), put(uint8_t{0});
  const fs::path path = dir_ / "all.gguf";
  std::ofstream(path, std::ios::binary) << bytes;

  const GgufFileReader reader(path);
  const auto& kvs = reader.kvs();
  EXPECT_EQ(kvs.at("u8"), 200);
  EXPECT_EQ(kvs.at("i8"), -100);
  EXPECT_EQ(kvs.at("u16"), 60000);
  EXPECT_EQ(kvs.at("i16"), -30000);
  EXPECT_EQ(kvs.at("u32"), 4000000000u);
  EXPECT_EQ(kvs.at("i32"), -2000000000);
  EXPECT_EQ(kvs.at("f32"), 1.25);
  EXPECT_EQ(kvs.at("bool"), false);
  EXPECT_EQ(kvs.at("string"), "text");
  EXPECT_EQ(kvs.at("u64").get<uint64_t>(), uint64_t{1} << 63);
  EXPECT_EQ(kvs.at("i64").get<int64_t>(), -(int64_t{1} << 62));
  EXPECT_EQ(kvs.at("f64"), -0.125);
  EXPECT_EQ(kvs.at("u16s"), nlohmann::json({1, 2}));
  EXPECT_EQ(kvs.at("bools"), nlohmann::json({true, false}));
  EXPECT_TRUE(reader.tensors().empty());

  // Cut inside the last array: named, not read past the end.
  const fs::path cut = dir_ / "cut.gguf";
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() - 1);
  try {
    GgufFileReader{cut};
    ADD_FAILURE() << "a truncated file was read";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(cut.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST_F(GgufFileTest, ExistingOutputIsRefusedAndKept) {
  const fs::path out = dir_ / "taken.gguf";
  std::ofstream(out) << "keep";
  try {
    GgufFileWriter writer(out);
    ADD_FAILURE() << "an existing output was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(out.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_all(out), "keep");
  EXPECT_EQ(entries(), std::vector<std::string>{"taken.gguf"});
}

TEST_F(GgufFileTest, NothingIsLeftWhenCommitNeverRuns) {
  {
    GgufFileWriter writer(dir_ / "m.gguf");
    writer.set_string("general.architecture", "llama");
    writer.add_tensor("a.weight", GgmlType::kF32, {4, 8}, at::ones({4, 8}, at::kFloat));
    EXPECT_FALSE(entries().empty());  // the spool exists while tensors arrive
  }
  EXPECT_TRUE(entries().empty());
}

// A writer killed with SIGKILL runs no destructor; the next writer of the
// same output removes what a dead process left, never a live one's.
TEST_F(GgufFileTest, TemporariesOfADeadWriterAreRemoved) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // reaped: its pid is now free
  const std::string dead = std::to_string(child), alive = std::to_string(::getppid());
  for (const std::string& name : {".m.gguf.tmp-" + dead, ".m.gguf.data-" + dead, ".m.gguf.tmp-" + alive,
                                  ".other.gguf.tmp-" + dead}) {
    std::ofstream(dir_ / name) << "left";
  }
  {
    GgufFileWriter writer(dir_ / "m.gguf");
    writer.commit();
  }
  EXPECT_EQ(entries(), (std::vector<std::string>{".m.gguf.tmp-" + alive, ".other.gguf.tmp-" + dead, "m.gguf"}));
}

TEST_F(GgufFileTest, TensorBytesMustMatchTheTypeAndShape) {
  GgufFileWriter writer(dir_ / "m.gguf");
  // 2 rows of 32 Q4_0 values need 2 x 18 bytes, not 2 x 32 floats.
  EXPECT_ANY_THROW(writer.add_tensor("a.weight", GgmlType::kQ4_0, {2, 32}, at::zeros({2, 32}, at::kFloat)));
  // 30 columns are not whole Q4_0 blocks.
  EXPECT_THROW(writer.add_tensor("b.weight", GgmlType::kQ4_0, {2, 30}, at::zeros({2, 18}, at::kByte)), InputError);
}

}  // namespace
}  // namespace gptq::gguf
