// Round trips through save_file / ShardedWriter / SafetensorsFile / Checkpoint.
#include "gptq/io/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>

#include "gptq/io/json.h"
#include "io/io_test_util.h"

namespace gptq::io {
namespace {

using testing::ScratchDir;

// Random contents of every dtype the format stores, shaped `shape`.
at::Tensor random_tensor(c10::ScalarType dtype, at::IntArrayRef shape, int64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  if (dtype == c10::kBool) return at::randint(0, 2, shape, generator, at::kLong).to(c10::kBool);
  if (c10::isFloatingType(dtype) || c10::isComplexType(dtype)) {
    return (at::randn(shape, generator, at::kFloat) * 8).to(dtype);
  }
  return at::randint(0, 120, shape, generator, at::kLong).to(dtype);
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

const std::vector<c10::ScalarType> kAllDtypes = {
    c10::kFloat,    c10::kHalf,        c10::kBFloat16,        c10::kDouble,
    c10::kLong,     c10::kInt,         c10::kShort,           c10::kChar,
    c10::kByte,     c10::kBool,        c10::ScalarType::UInt16, c10::ScalarType::UInt32,
    c10::ScalarType::UInt64, c10::ScalarType::Float8_e4m3fn, c10::ScalarType::Float8_e5m2};

TEST(Safetensors, RoundTripEveryDtypeIncludingScalarAndEmpty) {
  ScratchDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  int64_t seed = 1;
  for (auto dtype : kAllDtypes) {
    const std::string name = dtype_to_string(dtype);
    tensors.emplace_back(name + ".matrix", random_tensor(dtype, {5, 7}, seed++));
    tensors.emplace_back(name + ".scalar", random_tensor(dtype, {}, seed++));
    tensors.emplace_back(name + ".empty", random_tensor(dtype, {0, 3}, seed++));
  }
  save_file(dir / "all.safetensors", tensors, {{"note", "round trip"}});

  auto file = SafetensorsFile::open(dir / "all.safetensors");
  ASSERT_EQ(file->tensors().size(), tensors.size());
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->metadata().at("note"), "round trip");
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    const TensorInfo* info = file->find(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, expected.scalar_type());
    EXPECT_EQ(info->shape, expected.sizes().vec());
    EXPECT_EQ(info->nbytes(), expected.nbytes());
    EXPECT_EQ(info->numel(), expected.numel());
    EXPECT_TRUE(same_bytes(file->load(name), expected));
    EXPECT_TRUE(same_bytes(file->view(name), expected));
  }
}

TEST(Safetensors, HeaderIsPaddedWithSpacesToEightBytes) {
  ScratchDir dir;
  save_file(dir / "a.safetensors", {{"x", at::ones({3}, at::kFloat)}});
  std::ifstream in(dir / "a.safetensors", std::ios::binary);
  uint64_t header_size = 0;
  in.read(reinterpret_cast<char*>(&header_size), 8);
  EXPECT_EQ(header_size % 8, 0u);
  std::string header(header_size, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_size));
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"format\":\"pt\"}", 0), 0u) << header;
  const size_t json_end = header.find_last_of('}');
  EXPECT_EQ(header.find_first_not_of(' ', json_end + 1), std::string::npos) << header;
  EXPECT_EQ(std::filesystem::file_size(dir / "a.safetensors"), 8 + header_size + 12);
}

TEST(Safetensors, ViewIsZeroCopyAndLoadOwnsItsMemory) {
  ScratchDir dir;
  save_file(dir / "a.safetensors", {{"w", at::arange(12, at::kFloat).reshape({3, 4})}});
  auto file = SafetensorsFile::open(dir / "a.safetensors");
  const TensorInfo& info = *file->find("w");
  EXPECT_EQ(file->view("w").data_ptr(), static_cast<const void*>(file->data(info)));
  at::Tensor loaded = file->load("w");
  EXPECT_NE(loaded.data_ptr(), static_cast<const void*>(file->data(info)));
  file.reset();  // the loaded copy outlives the mapping
  EXPECT_TRUE(at::equal(loaded, at::arange(12, at::kFloat).reshape({3, 4})));
}

TEST(Safetensors, LazyLoadConvertsDtype) {
  ScratchDir dir;
  at::Tensor weight = random_tensor(c10::kFloat, {16, 8}, 7);
  at::Tensor half = random_tensor(c10::kHalf, {4, 4}, 8);
  save_file(dir / "a.safetensors", {{"weight", weight}, {"half", half}});
  auto file = SafetensorsFile::open(dir / "a.safetensors");
  EXPECT_TRUE(same_bytes(file->load("weight", c10::kBFloat16), weight.to(c10::kBFloat16)));
  EXPECT_TRUE(same_bytes(file->load("half", c10::kFloat), half.to(c10::kFloat)));
  EXPECT_TRUE(same_bytes(file->load("half", c10::kHalf), half));
}

TEST(Safetensors, LoadOntoCudaWhenAvailable) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  ScratchDir dir;
  at::Tensor weight = random_tensor(c10::kBFloat16, {64, 32}, 9);
  save_file(dir / "a.safetensors", {{"weight", weight}});
  auto file = SafetensorsFile::open(dir / "a.safetensors");
  at::Tensor on_gpu = file->load("weight", c10::kFloat, c10::Device(c10::kCUDA, 0));
  EXPECT_TRUE(on_gpu.is_cuda());
  EXPECT_TRUE(same_bytes(on_gpu.cpu(), weight.to(c10::kFloat)));
}

TEST(Safetensors, WriterAcceptsNonContiguousInput) {
  ScratchDir dir;
  at::Tensor transposed = at::arange(6, at::kInt).reshape({2, 3}).t();
  save_file(dir / "a.safetensors", {{"t", transposed}});
  auto file = SafetensorsFile::open(dir / "a.safetensors");
  EXPECT_TRUE(at::equal(file->load("t"), transposed));
}

TEST(ShardedWriter, SmallCapMakesShardsAndIndexThatCheckpointReadsBack) {
  ScratchDir dir;
  const auto out = dir / "out";
  std::map<std::string, at::Tensor> expected;
  {
    ShardedWriter writer(out, /*max_shard_bytes=*/1000, {{"quantizer", "gptq-quant"}});
    for (int layer = 0; layer < 5; ++layer) {
      for (const char* part : {"a", "b"}) {
        const std::string name = "layer." + std::to_string(layer) + "." + part;
        expected[name] = random_tensor(c10::kFloat, {10, 10}, layer * 2 + (part[0] - 'a'));
        writer.add(name, expected[name]);  // 400 bytes each: two per shard
      }
    }
    expected["big"] = random_tensor(c10::kBFloat16, {40, 40}, 99);  // 3200 bytes > cap
    writer.add("big", expected["big"]);
    expected["tail"] = random_tensor(c10::kByte, {3}, 100);
    writer.add("tail", expected["tail"]);
    auto written = writer.commit();
    EXPECT_EQ(written.size(), 8u);  // 7 shards + index
  }
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(out)) {
    files.push_back(entry.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  ASSERT_EQ(files.size(), 8u) << "temporary files left behind?";
  EXPECT_EQ(files.front(), "model-00001-of-00007.safetensors");
  EXPECT_EQ(files.back(), "model.safetensors.index.json");

  std::ifstream index_in(out / "model.safetensors.index.json");
  std::string index_text((std::istreambuf_iterator<char>(index_in)), {});
  nlohmann::json index = parse_json_strict(index_text, "index");
  uint64_t total = 0;
  for (const auto& [name, tensor] : expected) total += tensor.nbytes();
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(index["weight_map"]["big"], "model-00006-of-00007.safetensors");
  EXPECT_EQ(index["weight_map"]["tail"], "model-00007-of-00007.safetensors");

  Checkpoint checkpoint = Checkpoint::open(out);
  EXPECT_EQ(checkpoint.files().size(), 7u);
  EXPECT_EQ(checkpoint.total_bytes(), total);
  ASSERT_EQ(checkpoint.names().size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(same_bytes(checkpoint.load(name), tensor));
    EXPECT_EQ(checkpoint.info(name).shape, tensor.sizes().vec());
    EXPECT_EQ(checkpoint.file_of(name).metadata().at("quantizer"), "gptq-quant");
  }
  for (const auto& file : checkpoint.files()) {
    uint64_t bytes = 0;
    for (const auto& info : file->tensors()) bytes += info.nbytes();
    if (file->tensors().size() > 1) EXPECT_LE(bytes, 1000u) << file->path();
  }
  testing::expect_error<InputError>([&] { checkpoint.info("absent"); }, {"absent"});
}

TEST(ShardedWriter, OneShardIsModelSafetensorsWithoutIndex) {
  ScratchDir dir;
  ShardedWriter writer(dir.path(), 1 << 20);
  writer.add("x", at::ones({2, 2}, at::kHalf));
  auto written = writer.commit();
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(written[0], dir / "model.safetensors");
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  Checkpoint checkpoint = Checkpoint::open(dir.path());
  EXPECT_TRUE(at::equal(checkpoint.load("x"), at::ones({2, 2}, at::kHalf)));
  Checkpoint single = Checkpoint::open(dir / "model.safetensors");
  EXPECT_EQ(single.names(), std::vector<std::string>{"x"});
}

TEST(ShardedWriter, NothingLeftBehindWithoutCommit) {
  ScratchDir dir;
  const auto fresh = dir / "fresh";
  {
    ShardedWriter writer(fresh, 100);
    for (int tensor_idx = 0; tensor_idx < 4; ++tensor_idx) {  // flushes shards to disk
      writer.add("t" + std::to_string(tensor_idx), at::zeros({20}, at::kFloat));
    }
    EXPECT_TRUE(std::filesystem::exists(fresh));
  }
  EXPECT_FALSE(std::filesystem::exists(fresh)) << "created directory not removed";

  {
    ShardedWriter writer(dir.path(), 100);
    writer.add("t", at::zeros({50}, at::kFloat));
    writer.add("u", at::zeros({50}, at::kFloat));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(ShardedWriter, RejectsDuplicateAndReservedNames) {
  ScratchDir dir;
  ShardedWriter writer(dir.path(), 1000);
  writer.add("x", at::ones({1}));
  testing::expect_error<InputError>([&] { writer.add("x", at::ones({1})); }, {"'x'", "twice"});
  testing::expect_error<InputError>([&] { writer.add("__metadata__", at::ones({1})); },
                                    {"reserved"});
}

TEST(SaveFile, FailureLeavesNoTemporaryFile) {
  ScratchDir dir;
  testing::expect_error<UnsupportedError>(
      [&] {
        save_file(dir / "a.safetensors", {{"q", at::ones({2}, at::kComplexDouble)}});
      },
      {"'q'"});
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Dtype, NamesRoundTripAndUnknownIsUnsupported) {
  for (auto dtype : kAllDtypes) EXPECT_EQ(dtype_from_string(dtype_to_string(dtype)), dtype);
  EXPECT_EQ(dtype_to_string(c10::kBFloat16), "BF16");
  testing::expect_error<UnsupportedError>([] { dtype_from_string("F7"); }, {"F7"});
}

}  // namespace
}  // namespace gptq::io
