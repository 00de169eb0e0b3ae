#pragma once
// `gptq-quant convert`: a GPTQ checkpoint (v1 or v2) re-encoded in another
// format. run_convert looks the target up in a table (target_names() lists
// it), so a new target is one more entry.
//
// Targets:
//   gptq               GPTQ v1 from v2. v1 stores zero - 1 per field, so an
//                      asymmetric zero of 0 has no v1 encoding: refused
//                      (InputError) with the count of such groups and the first
//                      module, unless allow_lossy, which re-encodes each such
//                      group on the nearest v1 grid (v1_zeros.h) and
//                      reports what changed. Everything else is exact.
//   gptq_v2            GPTQ v2 from v1: always exact (only qzeros differ).
//   compressed-tensors "pack-quantized" as llm-compressor writes it and vLLM
//                      loads it (pack_quantized.h): exact; schemes it cannot
//                      hold (3 bits, act-order g_idx) are refused naming why.
//   fp16 | bf16 | fp32 a dequantized Hugging Face checkpoint (no
//                      quantization_config): W = (code - zero) * scale computed
//                      in fp32 (exact), rounded once to the target dtype; every
//                      other floating tensor cast to it.
//   gguf               one llama.cpp file, code for code where the scheme maps
//                      (gptq_to_gguf.cpp: 4-bit sym/asym or 8-bit sym groups of
//                      32 in column order); otherwise refused with the reason.
// Every output but gguf's file is a directory written under a temporary name and renamed when
// complete; an existing output, an input that is not a GPTQ checkpoint, or a
// malformed tensor is an InputError (exit 2) naming the file or tensor.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gptq::convert {

struct ConvertOptions {
  std::filesystem::path input;   // a GPTQ checkpoint directory
  std::string to;                // one of target_names()
  std::filesystem::path output;  // the output directory (a .gguf file for gguf)
  bool allow_lossy = false;      // --to gptq: re-encode v2 zeros of 0 instead of refusing
  bool progress = false;         // a redrawn "converting [i/n] <linear> ETA" line when stderr is a TTY
};

// The --to values, in the order --help lists them.
std::vector<std::string> target_names();

// Runs the conversion; returns the report: input, output, to, source_format,
// linears_converted, tensors_copied, input_bytes, output_bytes, and per target
// details (the lossy re-encoding's per-module changes).
nlohmann::json run_convert(const ConvertOptions& options);

}  // namespace gptq::convert
