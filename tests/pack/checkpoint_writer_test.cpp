#include "gptq/pack/checkpoint_writer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gptq/core/error.h"
#include "gptq/io/safetensors.h"
#include "gptq/pack/gptq_pack.h"

namespace gptq::pack {
namespace {

namespace fs = std::filesystem;

class CheckpointWriterTest : public ::testing::Test {
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

  SolvedLinear solved() const {
    SolvedLinear linear;
    linear.codes = at::randint(0, 16, {8, 16}, at::kByte);
    linear.zeros = at::full({1, 8}, 8, at::kInt);
    linear.scales = at::rand({1, 8}) + 0.1;
    linear.g_idx = sequential_g_idx(16, -1);
    return linear;
  }
  solver::Scheme scheme() const {
    solver::Scheme per_row;
    per_row.quant.group_size = -1;
    return per_row;
  }
  fs::path root_;
  std::unique_ptr<OutputFormat> v1_ = make_output_format("gptq");
};

TEST_F(CheckpointWriterTest, WritesConfigsCopiesFilesAndRenames) {
  {
    CheckpointWriter writer(root_ / "src", root_ / "out", *v1_);
    EXPECT_TRUE(fs::is_directory(writer.temp_dir()));
    EXPECT_FALSE(fs::exists(root_ / "out"));
    writer.add_linear("model.layers.0.mlp.up_proj", solved(), scheme());
    writer.add("model.norm.weight", at::ones({8}));
    RunSettings settings;
    settings.desc_act = true;
    solver::SchemeResolver schemes(scheme());
    schemes.keep_full_precision("model.layers.0.mlp.down_proj", "test");
    EXPECT_GT(writer.commit(schemes, settings), 0u);
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

TEST_F(CheckpointWriterTest, AbandonedWriteLeavesNothing) {
  {
    CheckpointWriter writer(root_ / "src", root_ / "out", *v1_);
    writer.add_linear("a", solved(), scheme());
  }
  EXPECT_FALSE(fs::exists(root_ / "out"));
  for (const auto& entry : fs::directory_iterator(root_)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
  }
}

TEST_F(CheckpointWriterTest, ExistingOutputOrMissingConfigIsInputError) {
  fs::create_directories(root_ / "taken");
  EXPECT_THROW(CheckpointWriter(root_ / "src", root_ / "taken", *v1_), InputError);
  fs::create_directories(root_ / "empty");
  EXPECT_THROW(CheckpointWriter(root_ / "empty", root_ / "out", *v1_), InputError);
  EXPECT_THROW(CheckpointWriter(root_ / "src", root_ / "no" / "parent" / "out", *v1_), InputError);
}

}  // namespace
}  // namespace gptq::pack
