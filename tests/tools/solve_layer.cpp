// Drives the solver and the GPTQ packer from the Python conformance tests
// (tests/conformance/test_solver_gptqmodel.py):
//
//   solve_layer solve IN.safetensors OUT.safetensors [options]
//       IN: "W" [out, in] (any float dtype) and either "X" [n, in] (inputs,
//       accumulated with gptq::solver::HessianAccumulator in batches of
//       --batch-rows rows) or "H" [in, in] float32.
//       Runs gptq_quantize (or rtn_quantize with --rtn) and writes OUT with
//       "codes" U8 [out, in], "scales" F32 [G, out], "zeros" I32 [G, out],
//       "g_idx" I32 [in], "dequantized" F32 [out, in], "H" F32 (the Hessian
//       used), the packed "qweight", "qzeros", "packed_scales" (F16),
//       "packed_g_idx", and metadata "loss", "damp_used", "n_samples",
//       "solve_seconds".
//   solve_layer pack IN.safetensors OUT.safetensors --bits B
//       IN: "codes" [out, in], "zeros" [G, out], "scales" [G, out], "g_idx" [in]
//       (integer / float dtypes as gptq::pack::pack_gptq takes them); OUT:
//       "qweight", "qzeros", "scales" (F16), "g_idx", "dequantized" (from the
//       packed tensors), "unpacked_codes", "unpacked_zeros".
//
// Options: --bits N (4), --group-size N (128, -1 = per row), --asym, --desc-act,
//   --static-groups, --mse, --damp-percent F (0.01), --damp-increment F (0.01),
//   --max-damp-retries N (10), --block-size N (128), --batch-rows N (all rows),
//   --rtn.
// Errors: one line on stderr; exit 2 for bad input, 1 otherwise.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "gptq/core/error.h"
#include "gptq/io/safetensors.h"
#include "gptq/pack/gptq_pack.h"
#include "gptq/solver/solver.h"

namespace {

struct Options {
  std::string mode, input, output;
  gptq::solver::GptqConfig gptq;
  int64_t batch_rows = 0;
  bool rtn = false;
};

Options parse_options(int argc, char** argv) {
  GPTQ_CHECK(argc >= 4, "usage: solve_layer {solve|pack} IN.safetensors OUT.safetensors [options]");
  Options options;
  options.mode = argv[1];
  options.input = argv[2];
  options.output = argv[3];
  GPTQ_CHECK(options.mode == "solve" || options.mode == "pack", "unknown mode '", options.mode, "'");
  for (int arg_idx = 4; arg_idx < argc; ++arg_idx) {
    const std::string flag = argv[arg_idx];
    auto value = [&]() -> std::string {
      GPTQ_CHECK(arg_idx + 1 < argc, flag, " needs a value");
      return argv[++arg_idx];
    };
    auto& quant = options.gptq.quant;
    if (flag == "--bits") quant.bits = std::stoi(value());
    else if (flag == "--group-size") quant.group_size = std::stoi(value());
    else if (flag == "--asym") quant.sym = false;
    else if (flag == "--mse") quant.mse = true;
    else if (flag == "--desc-act") options.gptq.desc_act = true;
    else if (flag == "--static-groups") options.gptq.static_groups = true;
    else if (flag == "--damp-percent") options.gptq.damp_percent = std::stod(value());
    else if (flag == "--damp-increment") options.gptq.damp_increment = std::stod(value());
    else if (flag == "--max-damp-retries") options.gptq.max_damp_retries = std::stoi(value());
    else if (flag == "--block-size") options.gptq.block_size = std::stoi(value());
    else if (flag == "--batch-rows") options.batch_rows = std::stoll(value());
    else if (flag == "--rtn") options.rtn = true;
    else GPTQ_CHECK(false, "unknown option '", flag, "'");
  }
  return options;
}

std::string format_double(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.17g", value);
  return buffer;
}

at::Tensor require(const gptq::io::SafetensorsFile& file, const std::string& name) {
  GPTQ_CHECK(file.contains(name), file.path().string(), ": missing tensor '", name, "'");
  return file.load(name);
}

at::Tensor hessian_of(const gptq::io::SafetensorsFile& file, int64_t n_cols, int64_t batch_rows,
                      int64_t& n_samples) {
  if (file.contains("H")) {
    n_samples = 0;
    return file.load("H", at::kFloat);
  }
  at::Tensor X = require(file, "X");
  GPTQ_CHECK(X.dim() == 2 && X.size(1) == n_cols, "X must be [n, ", n_cols, "]");
  gptq::solver::HessianAccumulator accumulator(n_cols, c10::Device(c10::kCPU));
  const int64_t step = batch_rows > 0 ? batch_rows : X.size(0);
  for (int64_t row_begin = 0; row_begin < X.size(0); row_begin += step) {
    accumulator.add(X.narrow(0, row_begin, std::min(step, X.size(0) - row_begin)));
  }
  n_samples = accumulator.n_samples();
  return accumulator.hessian();
}

void run_solve(const Options& options) {
  auto input = gptq::io::SafetensorsFile::open(options.input);
  at::Tensor W = require(*input, "W");
  GPTQ_CHECK(W.dim() == 2, "W must be 2-D");
  int64_t n_samples = 0;
  const bool have_hessian = input->contains("H") || input->contains("X");
  at::Tensor H = have_hessian ? hessian_of(*input, W.size(1), options.batch_rows, n_samples) : at::Tensor();

  const auto start = std::chrono::steady_clock::now();
  gptq::solver::QuantizedWeight result;
  if (options.rtn) {
    result = H.defined() ? gptq::solver::rtn_quantize(W, options.gptq.quant, H)
                         : gptq::solver::rtn_quantize(W, options.gptq.quant);
  } else {
    GPTQ_CHECK(H.defined(), "solve needs X or H in ", options.input);
    result = gptq::solver::gptq_quantize(W, H, options.gptq);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  gptq::pack::GptqTensors packed = gptq::pack::pack_gptq(result.codes, result.zeros, result.scales,
                                                         result.g_idx, options.gptq.quant.bits);
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"codes", result.codes.cpu()},
      {"scales", result.scales.cpu()},
      {"zeros", result.zeros.cpu()},
      {"g_idx", result.g_idx.cpu()},
      {"dequantized", result.dequantized.cpu()},
      {"qweight", packed.qweight},
      {"qzeros", packed.qzeros},
      {"packed_scales", packed.scales},
      {"packed_g_idx", packed.g_idx},
  };
  if (H.defined()) tensors.emplace_back("H", H.cpu());
  gptq::io::save_file(options.output, tensors,
                      {{"loss", format_double(result.loss)},
                       {"damp_used", format_double(result.damp_used)},
                       {"n_samples", std::to_string(n_samples)},
                       {"solve_seconds", format_double(seconds)}});
}

void run_pack(const Options& options) {
  auto input = gptq::io::SafetensorsFile::open(options.input);
  const int bits = options.gptq.quant.bits;
  gptq::pack::GptqTensors packed =
      gptq::pack::pack_gptq(require(*input, "codes"), require(*input, "zeros"), require(*input, "scales"),
                            require(*input, "g_idx"), bits);
  gptq::pack::UnpackedGptq unpacked = gptq::pack::unpack_gptq(packed, bits);
  gptq::io::save_file(options.output, {{"qweight", packed.qweight},
                                       {"qzeros", packed.qzeros},
                                       {"scales", packed.scales},
                                       {"g_idx", packed.g_idx},
                                       {"dequantized", gptq::pack::dequantize_gptq(packed, bits)},
                                       {"unpacked_codes", unpacked.codes},
                                       {"unpacked_zeros", unpacked.zeros}});
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse_options(argc, argv);
    if (options.mode == "solve") {
      run_solve(options);
    } else {
      run_pack(options);
    }
    return 0;
  } catch (const gptq::Error& error) {
    std::cerr << "solve_layer: " << error.what() << "\n";
    return error.exit_code();
  } catch (const std::exception& error) {
    std::cerr << "solve_layer: " << error.what() << "\n";
    return 1;
  }
}
