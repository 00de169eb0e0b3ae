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
#include "gptq/pack/gptq_pack.h"

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

// What an error says, or "" when `job` did not throw `ErrorType`.
template <typename ErrorType>
std::string refusal(const QuantizeOptions& job) {
  try {
    run_quantize(job);
  } catch (const ErrorType& e) {
    return e.what();
  }
  return "";
}

TEST_F(Pipeline, ContradictionsAreRefusedBeforeAnyWork) {
  // 24 does not divide the 32 input columns of q_proj: vLLM could not load it.
  QuantizeOptions ragged = options("ragged");
  ragged.gptq.quant.group_size = 24;
  const std::string message = refusal<InputError>(ragged);
  EXPECT_NE(message.find("model.layers.0.self_attn.q_proj"), std::string::npos) << message;
  EXPECT_NE(message.find("does not divide its 32 input columns"), std::string::npos) << message;

  QuantizeOptions static_per_row = options("static");
  static_per_row.gptq.quant.group_size = -1;
  static_per_row.gptq.static_groups = true;
  EXPECT_NE(refusal<InputError>(static_per_row).find("--static-groups"), std::string::npos);

  QuantizeOptions bad_format = options("fmt");
  bad_format.format = "awq";
  EXPECT_NE(refusal<InputError>(bad_format).find("gptq_v2"), std::string::npos);
  EXPECT_FALSE(fs::exists(root_ / "ragged"));
  expect_no_leftovers();
}

TEST_F(Pipeline, AlreadyQuantizedSourcesAreRefused) {
  run_quantize(options("once"));
  QuantizeOptions again = options("again");
  again.model_dir = root_ / "once";
  const std::string message = refusal<InputError>(again);
  EXPECT_NE(message.find("already quantized"), std::string::npos) << message;
  EXPECT_NE(message.find("'gptq'"), std::string::npos) << message;

  // FP8 block-scaled weights (DeepSeek-V3 style) without a quantization_config.
  const fs::path fp8 = root_ / "fp8";
  fs::create_directories(fp8);
  std::ofstream(fp8 / "config.json") << tiny_llama_json().dump();
  auto source = io::Checkpoint::open(model_);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : source.names()) tensors.push_back({name, source.load(name)});
  tensors.push_back({"model.layers.0.mlp.up_proj.weight_scale_inv", at::ones({1, 1})});
  io::save_file(fp8 / "model.safetensors", tensors);
  QuantizeOptions scaled = options("scaled");
  scaled.model_dir = fp8;
  EXPECT_NE(refusal<InputError>(scaled).find("weight_scale_inv"), std::string::npos);
  expect_no_leftovers();
}

// Asymmetric v1 output never stores a zero point of 0 (vLLM misreads it); v2
// stores zeros exactly; the reader handles both.
TEST_F(Pipeline, AsymmetricV1RaisesZerosAndV2KeepsThem) {
  QuantizeOptions v1 = options("v1");
  v1.gptq.quant.sym = false;
  QuantizeOptions v2 = options("v2");
  v2.gptq.quant.sym = false;
  v2.format = "gptq_v2";
  const auto v1_report = run_quantize(v1);
  const auto v2_report = run_quantize(v2);
  EXPECT_EQ(v1_report.at("format"), "gptq");
  EXPECT_EQ(v2_report.at("format"), "gptq_v2");
  EXPECT_EQ(v2_report.at("zero_points_raised"), 0);
  std::ifstream config_file(root_ / "v2" / "config.json");
  EXPECT_EQ(nlohmann::json::parse(config_file)["quantization_config"]["checkpoint_format"], "gptq_v2");

  const auto config = model::load_model_config(model_);
  for (const char* dir : {"v1", "v2"}) {
    SCOPED_TRACE(dir);
    GptqWeightSource source(root_ / dir);
    EXPECT_EQ(source.info().format, std::string(dir) == "v1" ? "gptq" : "gptq_v2");
    const at::Tensor W = source.tensor("model.layers.1.mlp.up_proj.weight", at::kFloat, at::kCPU);
    const at::Tensor original = io::Checkpoint::open(model_).load("model.layers.1.mlp.up_proj.weight");
    EXPECT_LT(((W - original).norm() / original.norm()).item<double>(), 0.2);
    EXPECT_GT(((W - original).norm() / original.norm()).item<double>(), 1e-4);
  }
  // Every stored v1 zero field reads back >= 1 through the v1 reader.
  auto checkpoint = io::Checkpoint::open(root_ / "v1");
  pack::GptqTensors packed{checkpoint.load("model.layers.0.self_attn.q_proj.qweight"),
                           checkpoint.load("model.layers.0.self_attn.q_proj.qzeros"),
                           checkpoint.load("model.layers.0.self_attn.q_proj.scales"),
                           checkpoint.load("model.layers.0.self_attn.q_proj.g_idx")};
  EXPECT_GE(pack::unpack_gptq(packed, 4).zeros.min().item<int64_t>(), 1);
}

}  // namespace
}  // namespace gptq::calib
