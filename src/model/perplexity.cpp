// Block-by-block whole-model runs and the GPTQ-paper perplexity.
#include "gptq/model/perplexity.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gptq/core/error.h"
#include "gptq/core/log.h"
#include "gptq/core/progress.h"

namespace gptq::model {
namespace {

void check_ids(const at::Tensor& ids, const ModelConfig& config) {
  GPTQ_CHECK(ids.dim() == 2 && ids.size(1) > 0, "token ids must be [rows, tokens], got ", ids.sizes());
  if (ids.numel() == 0) return;
  const int64_t low = ids.min().item<int64_t>();
  const int64_t high = ids.max().item<int64_t>();
  GPTQ_CHECK(low >= 0 && high < config.vocab_size, "token id out of range [0, ", config.vocab_size,
             "): found ", (low < 0 ? low : high));
}

}  // namespace

at::Tensor run_decoder(const ModelConfig& config, const WeightSource& source, const at::Tensor& ids,
                       const RunOptions& options) {
  check_ids(ids, config);
  at::Tensor hidden;
  {
    at::Tensor embedding = load_embedding(source, config, options.dtype, options.device);
    hidden = embed(config, embedding, ids);
  }
  RotaryCache rope(config, ids.size(1), options.dtype, options.device);
  for (int layer = 0; layer < config.n_layers; ++layer) {
    try {
      BlockWeights block = load_block(source, config, layer, options.dtype, options.device);
      hidden = block_forward(config, block, hidden, rope, nullptr, options.block);
    } catch (const Error&) {
      rethrow_with_context(config.layer_prefix(layer).substr(0, config.layer_prefix(layer).size() - 1));
    }
    if (options.on_block) options.on_block(layer, static_cast<int>(config.n_layers));
  }
  return hidden;
}

at::Tensor forward_logits(const ModelConfig& config, const WeightSource& source,
                          const at::Tensor& ids, const RunOptions& options) {
  at::Tensor hidden = run_decoder(config, source, ids, options);
  HeadWeights head = load_head(source, config, options.dtype, options.device);
  std::vector<at::Tensor> rows;
  for (int64_t row = 0; row < hidden.size(0); ++row) {
    rows.push_back(final_norm_and_logits(config, head, hidden[row]).to(at::kCPU, at::kFloat));
  }
  return at::stack(rows, 0);
}

PerplexityResult compute_perplexity(const ModelConfig& config, const WeightSource& source,
                                    const std::vector<int64_t>& token_ids,
                                    const PerplexityOptions& options) {
  GPTQ_CHECK(options.seqlen >= 2, "--seqlen must be at least 2, got ", options.seqlen);
  const int64_t n_tokens = static_cast<int64_t>(token_ids.size());
  int64_t n_windows = n_tokens / options.seqlen;
  GPTQ_CHECK(n_windows > 0, "the text has ", n_tokens, " tokens, fewer than one window of --seqlen ",
             options.seqlen);
  if (options.max_windows > 0) n_windows = std::min(n_windows, options.max_windows);
  if (options.seqlen > config.max_position_embeddings) {
    spdlog::warn("--seqlen {} exceeds max_position_embeddings {} of the model", options.seqlen,
                 config.max_position_embeddings);
  }

  auto start = std::chrono::steady_clock::now();
  at::Tensor ids = at::tensor(at::ArrayRef<int64_t>(token_ids.data(), n_windows * options.seqlen), at::kLong)
                       .view({n_windows, options.seqlen});
  at::Tensor hidden = run_decoder(config, source, ids, options.run);
  HeadWeights head = load_head(source, config, options.run.dtype, options.run.device);
  at::Tensor device_ids = ids.to(options.run.device);
  double nll_sum = 0;
  for (int64_t window = 0; window < n_windows; ++window) {
    at::Tensor logits = final_norm_and_logits(config, head, hidden[window]).to(at::kFloat);
    at::Tensor labels = device_ids[window].narrow(0, 1, options.seqlen - 1);
    at::Tensor nll = at::cross_entropy_loss(logits.narrow(0, 0, options.seqlen - 1), labels,
                                            std::nullopt, at::Reduction::Sum);
    nll_sum += nll.item<double>();
  }

  PerplexityResult result;
  result.n_windows = n_windows;
  result.seqlen = options.seqlen;
  result.n_tokens = n_tokens;
  result.n_scored = n_windows * (options.seqlen - 1);
  result.mean_nll = nll_sum / static_cast<double>(result.n_scored);
  result.ppl = std::exp(result.mean_nll);
  GPTQ_CHECK(std::isfinite(result.ppl), "perplexity is not finite (mean NLL ", result.mean_nll, ")");
  result.compute_s = seconds_since(start);
  result.tokens_per_s = static_cast<double>(n_windows * options.seqlen) / std::max(result.compute_s, 1e-9);
  return result;
}

std::vector<std::vector<int64_t>> read_token_rows(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GPTQ_CHECK(in.good(), "cannot read token file '", path.string(), "'");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::vector<std::vector<int64_t>> rows;
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(text);
      GPTQ_CHECK(json.is_array(), "token file '", path.string(), "': expected a JSON list");
      if (!json.empty() && json[0].is_array()) {
        for (const auto& row : json) rows.push_back(row.get<std::vector<int64_t>>());
      } else {
        rows.push_back(json.get<std::vector<int64_t>>());
      }
    } catch (const nlohmann::json::exception& e) {
      throw InputError("token file '" + path.string() + "': expected a JSON list of ints or of lists: " + e.what());
    }
    return rows;
  }
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::vector<int64_t> row;
    std::string word;
    while (words >> word) {
      size_t used = 0;
      int64_t value = 0;
      try {
        value = std::stoll(word, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      GPTQ_CHECK(used == word.size(), "token file '", path.string(), "': '", word, "' is not an integer");
      row.push_back(value);
    }
    if (!row.empty()) rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace gptq::model
