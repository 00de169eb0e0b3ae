#pragma once
// Whole-model runs that keep one decoder block's weights resident at a time:
// the hidden states of every row [N, T, H] stay on the device, each block is
// loaded through the WeightSource, applied to all rows and freed. Memory is
// one block + embeddings/head + activations, whatever the model size.
//
// Perplexity follows the GPTQ paper's WikiText-2 protocol: the token stream
// is cut into n_windows = n_tokens / seqlen non-overlapping windows (the tail
// is dropped), each window is scored on its own (positions restart at 0) and
//   ppl = exp( sum over windows and t in 1..T-1 of -log p(x_t | x_<t)
//              / (n_windows * (T - 1)) ),
// which equals the paper's exp(mean over windows of the window's mean NLL).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "gptq/model/config.h"
#include "gptq/model/forward.h"
#include "gptq/model/weights.h"

namespace gptq::model {

struct RunOptions {
  c10::ScalarType dtype = c10::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  BlockOptions block;
  // Called after each block with (layer, n_layers); may be empty.
  std::function<void(int, int)> on_block;
};

// ids [B, T] -> final hidden states [B, T, H] after every block.
at::Tensor run_decoder(const ModelConfig& config, const WeightSource& source, const at::Tensor& ids,
                       const RunOptions& options);

// ids [B, T] -> logits [B, T, vocab] float32 on the CPU.
at::Tensor forward_logits(const ModelConfig& config, const WeightSource& source,
                          const at::Tensor& ids, const RunOptions& options);

struct PerplexityOptions {
  int64_t seqlen = 2048;
  int64_t max_windows = 0;  // 0: all windows
  RunOptions run;
};

struct PerplexityResult {
  double ppl = 0;
  double mean_nll = 0;
  int64_t n_windows = 0;
  int64_t seqlen = 0;
  int64_t n_tokens = 0;   // tokens in the input stream
  int64_t n_scored = 0;   // predictions scored: n_windows * (seqlen - 1)
  double compute_s = 0;   // wall time of the forward passes and scoring
  double tokens_per_s = 0;  // n_windows * seqlen / compute_s
};

// InputError when the stream is shorter than one window or ids are out of
// the vocabulary.
PerplexityResult compute_perplexity(const ModelConfig& config, const WeightSource& source,
                                    const std::vector<int64_t>& token_ids,
                                    const PerplexityOptions& options);

// Pre-tokenized ids from a file: a JSON list of ints (one row) or of lists
// (rows), or whitespace-separated ints where each non-empty line is a row.
// InputError naming the file on anything else.
std::vector<std::vector<int64_t>> read_token_rows(const std::filesystem::path& path);

}  // namespace gptq::model
