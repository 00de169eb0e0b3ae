#pragma once
// Calibration data for GPTQ: the windows of token ids the model is run on,
// read from a file and sampled as the GPTQ paper samples WikiText-2 and C4.
//
// Accepted files (chosen by content):
//   JSON list of lists   ready windows, used as-is (the first n_samples rows,
//                        each cut to seqlen; a shorter row is an InputError)
//   JSON list of ints    a pre-tokenized stream
//   whitespace ints      a pre-tokenized stream ("1 523 88\n17 ...")
//   JSONL with "text"    one object per line; texts joined with "\n\n", tokenized
//   anything else        plain UTF-8 text, tokenized whole
// Text goes through `encode` (the model's own tokenizer, no special tokens, as
// GPTQ and GPTQModel do for WikiText-2).
//
// From a stream, window i starts at a uniformly random offset in
// [0, n_tokens - seqlen) drawn from std::mt19937_64 seeded with `seed`.
// InputError (naming the file and both lengths) when the stream is shorter
// than one window.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace gptq::calib {

using EncodeFn = std::function<std::vector<int32_t>(std::string_view text)>;

struct CalibrationWindows {
  at::Tensor input_ids;     // int64 [n_samples, seqlen], CPU
  int64_t n_stream_tokens;  // tokens in the file's stream (0 for ready windows)
  std::string format;       // "text", "jsonl", "ids", "windows"
};

// Reads `file` and draws the windows; `encode` is only called for text.
CalibrationWindows load_calibration(const std::filesystem::path& file, const EncodeFn& encode,
                                    int n_samples, int seqlen, uint64_t seed);

// n_samples windows of seqlen tokens from a stream; `source` names it in errors.
at::Tensor sample_windows(const std::vector<int32_t>& tokens, int n_samples, int seqlen,
                          uint64_t seed, const std::string& source = "calibration data");

}  // namespace gptq::calib
