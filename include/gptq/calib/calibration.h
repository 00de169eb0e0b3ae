#pragma once
// Calibration data for GPTQ: the windows of token ids the model is run on,
// read from a file and sampled as the GPTQ paper samples WikiText-2 and C4.
//
// Accepted files (chosen by content):
//   JSON list of lists   ready windows: they set the window count and length
//                        themselves, n_samples and seqlen only cap them: the
//                        first min(n_samples, rows) rows, each cut to
//                        min(seqlen, its length). The rows used must then be
//                        equally long (InputError naming the first that is
//                        not: "window 3 has 500 tokens, window 0 has 512"),
//                        and at least 2 tokens long. So `--calib w.json` with
//                        32 windows of 512 tokens runs 32 x 512 under the
//                        defaults (128 x 2048); --seqlen 256 cuts them to 256.
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
  // int64 [n_samples, seqlen], CPU; ready windows: [min(n_samples, rows),
  // min(seqlen, their length)], the shape the run then uses.
  at::Tensor input_ids;
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
