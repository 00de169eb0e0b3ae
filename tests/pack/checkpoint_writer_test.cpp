#include "gptq/pack/checkpoint_writer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gptq/core/error.h"
#include "gptq/io/safetensors.h"

namespace gptq::pack {
namespace {

namespace fs = std::filesystem;

class CheckpointWriter : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("gptq_ckpt_writer_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "src");
    std::ofstream(root_ / "src" / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 8})";
    std::ofstream(root_ / "src" / "tokenizer.json") << "{\"model\": {}}";
    std::ofstream(root_ / "src" / "generation_config.json") << "{}";
    std::ofstream(root_ / "src" / "model.safetensors") << "not copied";
    std::ofstream(root_ / "src" / "pytorch_model.bin") << "not copied";
  }
  void TearDown() override { fs::remove_all(root_); }

  GptqTensors tensors() const {
    at::Tensor codes = at::randint(0, 16, {8, 16}, at::kByte);
    at::Tensor zeros = at::full({1, 8}, 8, at::kInt);
    at::Tensor scales = at::rand({1, 8}) + 0.1;
    return pack_gptq(codes, zeros, scales, sequential_g_idx(16, -1), 4);
  }
  fs::path root_;
};

TEST_F(CheckpointWriter, WritesConfigsCopiesFilesAndRenames) {
  {
    GptqCheckpointWriter writer(root_ / "src", root_ / "out");
    EXPECT_TRUE(fs::is_directory(writer.temp_dir()));
    EXPECT_FALSE(fs::exists(root_ / "out"));
    writer.add_linear("model.layers.0.mlp.up_proj", tensors());
    writer.add("model.norm.weight", at::ones({8}));
    GptqCheckpointSettings settings;
    settings.group_size = -1;
    settings.desc_act = true;
    settings.skipped_modules = {"model.layers.0.mlp.down_proj"};
    EXPECT_GT(writer.commit(settings), 0u);
  }
  const fs::path out = root_ / "out";
  ASSERT_TRUE(fs::is_directory(out));
  EXPECT_TRUE(fs::is_regular_file(out / "tokenizer.json"));
  EXPECT_TRUE(fs::is_regular_file(out / "generation_config.json"));
  EXPECT_FALSE(fs::exists(out / "pytorch_model.bin"));
  std::ifstream config_file(out / "config.json");
  auto config = nlohmann::json::parse(config_file);
  EXPECT_EQ(config["hidden_size"], 8);
  const auto& q = config["quantization_config"];
  EXPECT_EQ(q["quant_method"], "gptq");
  EXPECT_EQ(q["group_size"], -1);
  EXPECT_EQ(q["desc_act"], true);
  EXPECT_EQ(q["checkpoint_format"], "gptq");
  EXPECT_TRUE(q["dynamic"].contains("-:model\\.layers\\.0\\.mlp\\.down_proj"));
  std::ifstream standalone(out / "quantize_config.json");
  EXPECT_EQ(nlohmann::json::parse(standalone), q);
  auto checkpoint = io::Checkpoint::open(out);
  EXPECT_TRUE(checkpoint.contains("model.layers.0.mlp.up_proj.qweight"));
  EXPECT_TRUE(checkpoint.contains("model.layers.0.mlp.up_proj.g_idx"));
  EXPECT_TRUE(checkpoint.load("model.norm.weight").equal(at::ones({8})));
  for (const auto& entry : fs::directory_iterator(root_)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos);
  }
}

TEST_F(CheckpointWriter, AbandonedWriteLeavesNothing) {
  {
    GptqCheckpointWriter writer(root_ / "src", root_ / "out");
    writer.add_linear("a", tensors());
  }
  EXPECT_FALSE(fs::exists(root_ / "out"));
  for (const auto& entry : fs::directory_iterator(root_)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
  }
}

TEST_F(CheckpointWriter, ExistingOutputOrMissingConfigIsInputError) {
  fs::create_directories(root_ / "taken");
  EXPECT_THROW(GptqCheckpointWriter(root_ / "src", root_ / "taken"), InputError);
  fs::create_directories(root_ / "empty");
  EXPECT_THROW(GptqCheckpointWriter(root_ / "empty", root_ / "out"), InputError);
  EXPECT_THROW(GptqCheckpointWriter(root_ / "src", root_ / "no" / "parent" / "out"), InputError);
}

}  // namespace
}  // namespace gptq::pack
