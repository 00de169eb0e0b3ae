// `quantize` / `rtn` end to end on a tiny synthetic Llama written to disk.
#include "gptq/calib/quantize_pipeline.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gptq/calib/gptq_weight_source.h"
#include "gptq/core/error.h"
#include "gptq/io/safetensors.h"
#include "gptq/model/perplexity.h"

namespace gptq::calib {
namespace {

namespace fs = std::filesystem;

nlohmann::json tiny_llama_json() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 32},
          {"intermediate_size", 64},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"vocab_size", 64},
          {"rms_norm_eps", 1e-5},
          {"max_position_embeddings", 64},
          {"torch_dtype", "float32"},
          {"tie_word_embeddings", false}};
}

class Pipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("gptq_pipeline_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    model_ = root_ / "model";
    fs::create_directories(model_);
    std::ofstream(model_ / "config.json") << tiny_llama_json().dump(2);
    std::ofstream(model_ / "generation_config.json") << R"({"bos_token_id": 1})";
    at::manual_seed(0);
    std::vector<std::pair<std::string, at::Tensor>> tensors = {
        {"model.embed_tokens.weight", at::randn({64, 32})},
        {"model.norm.weight", 1 + 0.1 * at::randn({32})},
        {"lm_head.weight", at::randn({64, 32}) / std::sqrt(32.0)}};
    auto w = [](int64_t out, int64_t in) { return at::randn({out, in}) / std::sqrt(double(in)); };
    for (int layer = 0; layer < 2; ++layer) {
      const std::string p = "model.layers." + std::to_string(layer) + ".";
      tensors.push_back({p + "input_layernorm.weight", 1 + 0.1 * at::randn({32})});
      tensors.push_back({p + "post_attention_layernorm.weight", 1 + 0.1 * at::randn({32})});
      tensors.push_back({p + "self_attn.q_proj.weight", w(32, 32)});
      tensors.push_back({p + "self_attn.k_proj.weight", w(16, 32)});
      tensors.push_back({p + "self_attn.v_proj.weight", w(16, 32)});
      tensors.push_back({p + "self_attn.o_proj.weight", w(32, 32)});
      tensors.push_back({p + "mlp.gate_proj.weight", w(64, 32)});
      tensors.push_back({p + "mlp.up_proj.weight", w(64, 32)});
      tensors.push_back({p + "mlp.down_proj.weight", w(32, 64)});
    }
    io::save_file(model_ / "model.safetensors", tensors);
    std::string ids;
    for (int idx = 0; idx < 2000; ++idx) ids += std::to_string((idx * 7 + idx / 13) % 64) + " ";
    std::ofstream(root_ / "calib.txt") << ids;
  }
  void TearDown() override { fs::remove_all(root_); }

  QuantizeOptions options(const std::string& output) const {
    QuantizeOptions o;
    o.model_dir = model_;
    o.output_dir = root_ / output;
    o.calib_file = root_ / "calib.txt";
    o.n_samples = 8;
    o.seqlen = 32;
    o.device = "cpu";
    o.gptq.quant.group_size = 16;
    o.progress = false;
    return o;
  }

  // No temporary directories left beside the outputs.
  void expect_no_leftovers() const {
    for (const auto& entry : fs::directory_iterator(root_)) {
      EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos)
          << entry.path();
    }
  }

  fs::path root_;
  fs::path model_;
};

TEST_F(Pipeline, GptqWritesALoadableCheckpoint) {
  nlohmann::json report = run_quantize(options("out"));
  const fs::path out = root_ / "out";
  ASSERT_TRUE(fs::is_regular_file(out / "model.safetensors"));
  EXPECT_TRUE(fs::is_regular_file(out / "generation_config.json"));
  expect_no_leftovers();

  std::ifstream config_file(out / "config.json");
  auto config = nlohmann::json::parse(config_file);
  const auto& q = config.at("quantization_config");
  EXPECT_EQ(q.at("quant_method"), "gptq");
  EXPECT_EQ(q.at("bits"), 4);
  EXPECT_EQ(q.at("group_size"), 16);
  EXPECT_EQ(q.at("checkpoint_format"), "gptq");
  EXPECT_EQ(q.at("lm_head"), false);
  EXPECT_TRUE(q.at("meta").at("true_sequential").get<bool>());
  EXPECT_TRUE(fs::is_regular_file(out / "quantize_config.json"));

  auto checkpoint = io::Checkpoint::open(out);
  EXPECT_EQ(checkpoint.info("model.layers.1.mlp.down_proj.qweight").shape,
            (std::vector<int64_t>{64 * 4 / 32, 32}));
  EXPECT_EQ(checkpoint.info("model.layers.1.mlp.down_proj.scales").dtype, at::kHalf);
  EXPECT_FALSE(checkpoint.contains("model.layers.1.mlp.down_proj.weight"));
  // Unquantized tensors are byte-identical copies.
  auto original = io::Checkpoint::open(model_);
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                           "model.layers.0.input_layernorm.weight"}) {
    EXPECT_TRUE(checkpoint.load(name).equal(original.load(name))) << name;
  }

  ASSERT_EQ(report.at("layers").size(), 14u);
  for (const auto& layer : report.at("layers")) {
    EXPECT_TRUE(layer.at("quantized").get<bool>());
    EXPECT_GT(layer.at("loss").get<double>(), 0.0);
    EXPECT_EQ(layer.at("n_tokens"), 8 * 32);
  }
  EXPECT_FALSE(report.at("calibration").at("streamed").get<bool>());
  EXPECT_NE(report.at("calibration").at("note").get<std::string>().find("held"), std::string::npos);

  // The checkpoint read back dequantized gives logits close to the original's.
  const auto model_config = model::load_model_config(model_);
  GptqWeightSource quantized(out);
  model::CheckpointWeightSource fp(model_);
  at::Tensor ids = at::randint(0, 64, {2, 16}, at::kLong);
  at::Tensor fp_logits = model::forward_logits(model_config, fp, ids, {});
  at::Tensor q_logits = model::forward_logits(model_config, quantized, ids, {});
  const double relative = ((q_logits - fp_logits).norm() / fp_logits.norm()).item<double>();
  EXPECT_GT(relative, 1e-4);
  EXPECT_LT(relative, 0.2);
}

TEST_F(Pipeline, RtnNeedsNoCalibrationAndGptqBeatsIt) {
  QuantizeOptions rtn = options("rtn");
  rtn.method = Method::kRtn;
  rtn.calib_file.clear();
  auto rtn_report = run_quantize(rtn);
  auto gptq_report = run_quantize(options("gptq"));
  EXPECT_EQ(rtn_report.at("method"), "rtn");
  ASSERT_TRUE(fs::is_regular_file(root_ / "rtn" / "model.safetensors"));

  // Output error on the calibration windows themselves, GPTQ vs RTN.
  const auto config = model::load_model_config(model_);
  model::CheckpointWeightSource fp(model_);
  at::Tensor ids = at::randint(0, 64, {4, 32}, at::kLong);
  at::Tensor reference = model::forward_logits(config, fp, ids, {});
  auto error = [&](const char* dir) {
    GptqWeightSource source(root_ / dir);
    return (model::forward_logits(config, source, ids, {}) - reference).norm().item<double>();
  };
  EXPECT_LT(error("gptq"), error("rtn"));
}

TEST_F(Pipeline, StreamedMlpActivationsGiveTheSameCheckpoint) {
  QuantizeOptions held = options("held");
  held.block.batch_chunk = 3;  // 8 windows: chunks of 3, 3, 2
  QuantizeOptions streamed = options("streamed");
  streamed.block.batch_chunk = 3;
  streamed.block.max_held_bytes = 0;
  auto held_report = run_quantize(held);
  auto streamed_report = run_quantize(streamed);
  EXPECT_FALSE(held_report.at("calibration").at("streamed").get<bool>());
  EXPECT_TRUE(streamed_report.at("calibration").at("streamed").get<bool>());
  const std::string note = streamed_report.at("calibration").at("note");
  EXPECT_NE(note.find("recomputed per chunk of 3 window(s)"), std::string::npos) << note;

  auto held_checkpoint = io::Checkpoint::open(root_ / "held");
  auto streamed_checkpoint = io::Checkpoint::open(root_ / "streamed");
  ASSERT_EQ(held_checkpoint.names(), streamed_checkpoint.names());
  for (const auto& name : held_checkpoint.names()) {
    EXPECT_TRUE(held_checkpoint.load(name).equal(streamed_checkpoint.load(name))) << name;
  }
}

TEST_F(Pipeline, NoTrueSequentialAndActOrderRun) {
  QuantizeOptions o = options("nts");
  o.true_sequential = false;
  o.gptq.desc_act = true;
  auto report = run_quantize(o);
  std::ifstream config_file(root_ / "nts" / "config.json");
  auto config = nlohmann::json::parse(config_file);
  EXPECT_TRUE(config["quantization_config"]["desc_act"].get<bool>());
  EXPECT_FALSE(config["quantization_config"]["meta"]["true_sequential"].get<bool>());
}

TEST_F(Pipeline, BadInputsAreInputErrorsAndLeaveNothing) {
  fs::create_directories(root_ / "exists");
  std::ofstream(root_ / "exists" / "keep.txt") << "mine";
  EXPECT_THROW(run_quantize(options("exists")), InputError);
  EXPECT_TRUE(fs::is_regular_file(root_ / "exists" / "keep.txt"));

  QuantizeOptions short_calib = options("short");
  short_calib.seqlen = 5000;
  EXPECT_THROW(run_quantize(short_calib), InputError);
  EXPECT_FALSE(fs::exists(root_ / "short"));

  QuantizeOptions no_weights = options("nw");
  no_weights.model_dir = root_ / "empty_model";
  fs::create_directories(no_weights.model_dir);
  std::ofstream(no_weights.model_dir / "config.json") << tiny_llama_json().dump();
  EXPECT_THROW(run_quantize(no_weights), Error);
  EXPECT_FALSE(fs::exists(root_ / "nw"));

  QuantizeOptions unsupported = options("unsupported");
  unsupported.model_dir = root_ / "gpt2";
  fs::create_directories(unsupported.model_dir);
  auto json = tiny_llama_json();
  json["architectures"] = {"GPT2LMHeadModel"};
  std::ofstream(unsupported.model_dir / "config.json") << json.dump();
  EXPECT_THROW(run_quantize(unsupported), UnsupportedError);

  QuantizeOptions no_calib = options("nocalib");
  no_calib.calib_file.clear();
  EXPECT_THROW(run_quantize(no_calib), InputError);
  expect_no_leftovers();
}

}  // namespace
}  // namespace gptq::calib
