// gptq_tool_model_logits: our model's logits for given token ids, for the
// conformance tests to compare with transformers.
//
//   gptq_tool_model_logits --model DIR --ids FILE --out FILE.bin
//                          [--dtype auto|fp32|bf16|fp16] [--device auto|cpu|cuda]
//
// FILE holds rows of equal length (see gptq::model::read_token_rows). Writes
// float32 little-endian logits [rows, T, vocab] to --out and prints
// {"shape": [rows, T, vocab], "dtype": "...", "device": "..."} on stdout.
// Exit status 2 with one line on stderr for bad input (as gptq-quant).
#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include "gptq/backend/device.h"
#include "gptq/calib/gptq_weight_source.h"
#include "gptq/core/error.h"
#include "gptq/model/config.h"
#include "gptq/model/perplexity.h"
#include "gptq/model/weights.h"

namespace {

std::map<std::string, std::string> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> args = {{"--dtype", "auto"}, {"--device", "cpu"}};
  for (int idx = 1; idx < argc; ++idx) {
    std::string key = argv[idx];
    GPTQ_CHECK(key.rfind("--", 0) == 0 && idx + 1 < argc, "usage: --model DIR --ids FILE --out FILE "
               "[--dtype D] [--device D] (bad argument '", key, "')");
    args[key] = argv[++idx];
  }
  for (const char* required : {"--model", "--ids", "--out"}) {
    GPTQ_CHECK(args.count(required), "missing ", required);
  }
  return args;
}

int run(int argc, char** argv) {
  auto args = parse_args(argc, argv);
  using namespace gptq::model;
  ModelConfig config = load_model_config(args["--model"]);
  // A GPTQ checkpoint reads back dequantized (gptq::calib::GptqWeightSource).
  auto source_ptr = gptq::calib::open_weight_source(args["--model"]);
  const WeightSource& source = *source_ptr;
  auto rows = read_token_rows(args["--ids"]);
  GPTQ_CHECK(!rows.empty(), "no token ids in '", args["--ids"], "'");
  std::vector<int64_t> flat;
  for (const auto& row : rows) {
    GPTQ_CHECK(row.size() == rows[0].size(), "rows of '", args["--ids"], "' differ in length");
    flat.insert(flat.end(), row.begin(), row.end());
  }
  at::Tensor ids = at::tensor(flat, at::kLong).view({static_cast<int64_t>(rows.size()), -1});
  RunOptions options;
  const gptq::backend::ComputeContext context =
      gptq::backend::resolve_compute(args["--device"], args["--dtype"], config.torch_dtype);
  options.device = context.device;
  options.dtype = context.dtype;
  at::Tensor logits = forward_logits(config, source, ids, options).contiguous();
  std::ofstream out(args["--out"], std::ios::binary);
  out.write(static_cast<const char*>(logits.data_ptr()), static_cast<std::streamsize>(logits.nbytes()));
  GPTQ_CHECK(out.good(), "cannot write '", args["--out"], "'");
  std::cout << "{\"shape\": [" << logits.size(0) << ", " << logits.size(1) << ", " << logits.size(2)
            << "], \"dtype\": \"" << dtype_to_hf_name(options.dtype) << "\", \"device\": \""
            << options.device.str() << "\"}\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const gptq::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return e.exit_code();
  } catch (const std::exception& e) {
    std::string message = e.what();
    if (auto eol = message.find('\n'); eol != std::string::npos) message.resize(eol);
    std::cerr << "error: " << message << "\n";
    return 1;
  }
}
