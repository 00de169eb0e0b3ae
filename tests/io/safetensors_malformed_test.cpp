// Every structural problem in a safetensors file or sharded index is a
// one-line InputError (UnsupportedError for an unknown dtype) naming the file.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "gptq/io/safetensors.h"
#include "io/io_test_util.h"

namespace gptq::io {
namespace {

using testing::expect_error;
using testing::safetensors_bytes;
using testing::ScratchDir;
using testing::write_bytes;

class Malformed : public ::testing::Test {
 protected:
  // Writes a file of `header` + `data` named `name` and expects open() to throw
  // E whose message names the file and contains `needles`.
  template <typename E = InputError>
  void expect_open_fails(const std::string& header, const std::string& data,
                         std::initializer_list<std::string> needles,
                         std::optional<uint64_t> declared_length = std::nullopt) {
    const auto path = dir_ / "bad.safetensors";
    write_bytes(path, safetensors_bytes(header, data, declared_length));
    expect_error<E>([&] { SafetensorsFile::open(path); }, {"bad.safetensors"});
    expect_error<E>([&] { SafetensorsFile::open(path); }, needles);
  }
  ScratchDir dir_;
};

const std::string kEightBytes(8, '\x01');

TEST_F(Malformed, ValidControlFileOpens) {
  write_bytes(dir_ / "ok.safetensors",
              safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                kEightBytes));
  auto file = SafetensorsFile::open(dir_ / "ok.safetensors");
  EXPECT_EQ(file->tensors().size(), 1u);
}

TEST_F(Malformed, FileShorterThanLengthPrefix) {
  write_bytes(dir_ / "bad.safetensors", "abc");
  expect_error<InputError>([&] { SafetensorsFile::open(dir_ / "bad.safetensors"); },
                           {"bad.safetensors", "too small"});
}

TEST_F(Malformed, HeaderLengthBeyondFile) {
  expect_open_fails("{}", "", {"beyond the file"}, /*declared_length=*/1000);
}

TEST_F(Malformed, HeaderLengthOverSaneBound) {
  // A sparse file big enough that the prefix fits, but over the 100 MB bound.
  const auto path = dir_ / "bad.safetensors";
  write_bytes(path, safetensors_bytes("{}", "", 150'000'000));
  std::filesystem::resize_file(path, 160'000'000);
  expect_error<InputError>([&] { SafetensorsFile::open(path); },
                           {"bad.safetensors", "exceeds the 100000000-byte limit"});
}

TEST_F(Malformed, InvalidJson) { expect_open_fails(R"({"a": {"dtype": )", "", {"invalid JSON"}); }

// Fuzzer finding: nlohmann quotes the whole token it was reading, so a long
// string or run of whitespace before the error made a message as long as the
// header.
TEST_F(Malformed, InvalidJsonMessageStaysShort) {
  const std::vector<std::string> headers = {
      R"({"a":{"dtype":"U32")" + std::string(2000, '\n') + R"(.w"[1,2]}})",
      "{\"" + std::string(5000, 'x') + "\x01\":1}",
      "{\"" + std::string(6000, 'x')};
  for (const auto& header : headers) {
    write_bytes(dir_ / "bad.safetensors", safetensors_bytes(header, ""));
    expect_error<InputError>([&] { SafetensorsFile::open(dir_ / "bad.safetensors"); },
                             {"bad.safetensors", "invalid JSON", "line ", "..."});
    try {
      SafetensorsFile::open(dir_ / "bad.safetensors");
    } catch (const InputError& e) {
      EXPECT_LT(std::string(e.what()).size(), 400u) << e.what();
    }
  }
}

TEST_F(Malformed, InvalidUtf8) { expect_open_fails("{\"\xff\xfe\":1}", "", {"invalid JSON"}); }

TEST_F(Malformed, JsonNotAnObject) {
  expect_open_fails("[1, 2]", "", {"does not start with '{'"});
  expect_open_fails("{} []", "", {"invalid JSON"});
}

TEST_F(Malformed, EntryNotAnObject) { expect_open_fails(R"({"a": 3})", "", {"'a'", "not a JSON object"}); }

TEST_F(Malformed, DuplicateTensorKey) {
  expect_open_fails(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                    R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                    "xy", {"duplicate JSON key 'a'"});
}

TEST_F(Malformed, TooDeeplyNested) {
  expect_open_fails(R"({"a":{"dtype":"U8","shape":[[[[1]]]],"data_offsets":[0,1]}})", "x",
                    {"nested deeper"});
}

TEST_F(Malformed, UnknownDtypeIsUnsupported) {
  expect_open_fails<UnsupportedError>(
      R"({"w":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", kEightBytes,
      {"tensor 'w'", "'F7'"});
}

TEST_F(Malformed, MissingFields) {
  expect_open_fails(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", kEightBytes,
                    {"tensor 'w'", "missing 'dtype'"});
  expect_open_fails(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", kEightBytes,
                    {"tensor 'w'", "missing 'shape'"});
  expect_open_fails(R"({"w":{"dtype":"F32","shape":[2]}})", kEightBytes,
                    {"tensor 'w'", "missing 'data_offsets'"});
  expect_open_fails(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", kEightBytes,
                    {"tensor 'w'", "[begin, end]"});
}

TEST_F(Malformed, BadShape) {
  expect_open_fails(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kEightBytes,
                    {"tensor 'w'", "non-negative integer", "-2"});
  expect_open_fails(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", kEightBytes,
                    {"tensor 'w'", "non-negative integer"});
  expect_open_fails(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", kEightBytes,
                    {"tensor 'w'", "non-negative integer"});
  expect_open_fails(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", kEightBytes,
                    {"tensor 'w'", "'shape' is not an array"});
  expect_open_fails(
      R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
      kEightBytes, {"tensor 'w'", "overflows"});
}

TEST_F(Malformed, OffsetsOutsideDataSection) {
  expect_open_fails(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", kEightBytes,
                    {"tensor 'w'", "outside the data section"});
  expect_open_fails(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", kEightBytes,
                    {"tensor 'w'", "non-negative integer"});
}

TEST_F(Malformed, EndBeforeBegin) {
  expect_open_fails(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})", kEightBytes,
                    {"tensor 'w'", "< begin"});
}

TEST_F(Malformed, OverlappingTensors) {
  expect_open_fails(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    kEightBytes, {"'b'", "overlaps", "'a'"});
}

TEST_F(Malformed, GapAndTrailingBytes) {
  expect_open_fails(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", kEightBytes,
                    {"gap of 4 bytes", "'a'"});
  expect_open_fails(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", kEightBytes,
                    {"trailing bytes"});
}

TEST_F(Malformed, BytesDoNotMatchShape) {
  expect_open_fails(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", kEightBytes,
                    {"tensor 'w'", "span 8 bytes", "is 4"});
}

TEST_F(Malformed, NamesInMessagesAreEscapedAndShortened) {
  expect_open_fails<UnsupportedError>(
      R"({"line\nbreak":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", kEightBytes,
      {"tensor 'line\\nbreak'"});
  expect_open_fails(R"({"w":{"dtype":"F32","shape":[")" + std::string(5000, 'x') +
                        R"("],"data_offsets":[0,8]}})",
                    kEightBytes, {"non-negative integer", "...'"});
}

TEST_F(Malformed, MetadataMustMapStringsToStrings) {
  expect_open_fails(R"({"__metadata__":{"format":3}})", "", {"'format'", "not a string"});
  expect_open_fails(R"({"__metadata__":[1]})", "", {"'__metadata__' is not a JSON object"});
}

TEST_F(Malformed, TruncatedFile) {
  const auto path = dir_ / "cut.safetensors";
  save_file(path, {{"a", at::ones({64}, at::kFloat)}, {"b", at::ones({64}, at::kFloat)}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  expect_error<InputError>([&] { SafetensorsFile::open(path); },
                           {"cut.safetensors", "tensor 'b'", "truncated"});
  std::filesystem::resize_file(path, 40);  // inside the header
  expect_error<InputError>([&] { SafetensorsFile::open(path); },
                           {"cut.safetensors", "beyond the file", "truncated"});
}

TEST_F(Malformed, BoolBytesOtherThanZeroOrOne) {
  const auto path = dir_ / "bool.safetensors";
  write_bytes(path, safetensors_bytes(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                                      std::string("\x01\x07", 2)));
  auto file = SafetensorsFile::open(path);
  expect_error<InputError>([&] { file->load("m"); }, {"bool.safetensors", "'m'", "not 0 or 1"});
}

TEST_F(Malformed, ParseHeaderRejectsOversizeLengthWithoutReadingIt) {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  const uint8_t byte = '{';
  expect_error<InputError>(
      [&] {
        SafetensorsFile::parse_header(&byte, 100'000'001, 200'000'000, "x.safetensors", tensors,
                                      metadata);
      },
      {"x.safetensors", "limit"});
}

TEST_F(Malformed, MissingFileAndUnknownTensor) {
  expect_error<InputError>([&] { SafetensorsFile::open(dir_ / "absent.safetensors"); },
                           {"absent.safetensors", "cannot open"});
  save_file(dir_ / "ok.safetensors", {{"a", at::ones({1})}});
  auto file = SafetensorsFile::open(dir_ / "ok.safetensors");
  expect_error<InputError>([&] { file->load("zz"); }, {"ok.safetensors", "'zz'"});
}

// --- sharded checkpoints --------------------------------------------------

class MalformedIndex : public ::testing::Test {
 protected:
  void SetUp() override {
    save_file(dir_ / "s1.safetensors", {{"a", at::ones({2})}, {"b", at::ones({3})}});
    save_file(dir_ / "s2.safetensors", {{"c", at::ones({4})}});
  }
  void write_index(const std::string& weight_map) {
    write_bytes(dir_ / "model.safetensors.index.json",
                R"({"metadata":{"total_size":36},"weight_map":)" + weight_map + "}");
  }
  ScratchDir dir_;
};

TEST_F(MalformedIndex, ValidControlIndexOpens) {
  write_index(R"({"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"})");
  Checkpoint checkpoint = Checkpoint::open(dir_.path());
  EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(checkpoint.total_bytes(), 36u);
}

TEST_F(MalformedIndex, MissingShard) {
  write_index(R"({"a":"s1.safetensors","c":"s3.safetensors"})");
  expect_error<InputError>([&] { Checkpoint::open(dir_.path()); },
                           {"model.safetensors.index.json", "s3.safetensors", "missing"});
}

TEST_F(MalformedIndex, IndexNamesTensorItsShardLacks) {
  write_index(R"({"a":"s1.safetensors","c":"s1.safetensors"})");
  expect_error<InputError>([&] { Checkpoint::open(dir_.path()); },
                           {"model.safetensors.index.json", "'c'", "s1.safetensors"});
}

TEST_F(MalformedIndex, DuplicateTensorAcrossShards) {
  save_file(dir_ / "s2.safetensors", {{"c", at::ones({4})}, {"a", at::ones({2})}});
  write_index(R"({"a":"s1.safetensors","c":"s2.safetensors"})");
  expect_error<InputError>([&] { Checkpoint::open(dir_.path()); },
                           {"'a'", "s1.safetensors", "s2.safetensors"});
}

TEST_F(MalformedIndex, BadIndexJson) {
  write_bytes(dir_ / "model.safetensors.index.json", "{\"weight_map\": ");
  expect_error<InputError>([&] { Checkpoint::open(dir_.path()); },
                           {"model.safetensors.index.json", "invalid JSON"});
  write_bytes(dir_ / "model.safetensors.index.json", R"({"metadata":{}})");
  expect_error<InputError>([&] { Checkpoint::open(dir_.path()); },
                           {"model.safetensors.index.json", "weight_map"});
  write_index(R"({"a":"../s1.safetensors"})");
  expect_error<InputError>([&] { Checkpoint::open(dir_.path()); },
                           {"model.safetensors.index.json", "inside the checkpoint directory"});
}

TEST_F(MalformedIndex, CorruptShardNamesTheShard) {
  write_bytes(dir_ / "s2.safetensors", safetensors_bytes("{\"c\":", ""));
  write_index(R"({"a":"s1.safetensors","c":"s2.safetensors"})");
  expect_error<InputError>([&] { Checkpoint::open(dir_.path()); },
                           {"s2.safetensors", "invalid JSON"});
}

TEST_F(MalformedIndex, DirectoryWithoutCheckpoint) {
  ScratchDir empty;
  expect_error<InputError>([&] { Checkpoint::open(empty.path()); },
                           {empty.path().string(), "model.safetensors"});
  expect_error<InputError>([&] { Checkpoint::open(empty / "nope"); }, {"nope"});
}

// A shard cut short while a run is reading it (after open() validated it):
// the load names the file and tensor instead of dying of SIGBUS in the mapping.
TEST(MalformedMidRun, TruncatedAfterOpenNamesTheFileAndTensor) {
  ScratchDir dir;
  const auto path = dir / "shard.safetensors";
  save_file(path, {{"first", at::ones({64})}, {"last", at::ones({4096})}});
  auto file = SafetensorsFile::open(path);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1000);
  EXPECT_TRUE(at::equal(file->load("first"), at::ones({64})));
  for (auto dtype : {c10::kFloat, c10::kHalf}) {  // read straight, and read through the converting buffer
    expect_error<InputError>([&] { file->load("last", dtype); },
                             {"shard.safetensors", "'last'", "1000 byte(s) short", "truncated"});
  }
}

}  // namespace
}  // namespace gptq::io
