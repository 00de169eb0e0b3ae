// Decoder block forward: RMSNorm, RoPE, GQA causal attention, SwiGLU MLP.
// Numerics follow transformers' Llama family (sdpa attention) op for op.
#include "gptq/model/forward.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "gptq/core/error.h"

namespace gptq::model {
namespace {

// Where in the block a linear reads its input from.
enum class Site { kAttentionInput, kAttentionOutput, kMlpInput, kMlpHidden };

Site site_of(const std::string& linear) {
  if (linear == "self_attn.q_proj" || linear == "self_attn.k_proj" || linear == "self_attn.v_proj")
    return Site::kAttentionInput;
  if (linear == "self_attn.o_proj") return Site::kAttentionOutput;
  if (linear == "mlp.gate_proj" || linear == "mlp.up_proj") return Site::kMlpInput;
  if (linear == "mlp.down_proj") return Site::kMlpHidden;
  GPTQ_ASSERT(false, "linear '", linear, "' has no input site in the block forward");
  return Site::kAttentionInput;
}

at::Tensor linear(const BlockWeights& weights, const std::string& name, const at::Tensor& x) {
  const at::Tensor* bias = weights.find(name + ".bias");
  return at::linear(x, weights.at(name + ".weight"), bias ? *bias : at::Tensor());
}

// The block's state while it runs; the observer hook sits between stages.
class BlockRun {
 public:
  BlockRun(const ModelConfig& config, BlockWeights& weights, const RotaryCache& rope,
           GroupObserver* observer, int64_t attention_chunk)
      : config_(config), spec_(config.arch), weights_(weights), rope_(rope), observer_(observer),
        attention_chunk_(attention_chunk) {}

  at::Tensor forward(const at::Tensor& x) {
    at::Tensor normed = rms_norm(x, weights_.at(spec_.input_norm + ".weight"), config_.rms_norm_eps);
    notify(Site::kAttentionInput, normed);
    at::Tensor attended = attention(normed);
    normed.reset();
    notify(Site::kAttentionOutput, attended);
    at::Tensor h = x + linear(weights_, "self_attn.o_proj", attended);
    attended.reset();
    normed = rms_norm(h, weights_.at(spec_.post_attention_norm + ".weight"), config_.rms_norm_eps);
    notify(Site::kMlpInput, normed);
    at::Tensor gated = at::silu(linear(weights_, "mlp.gate_proj", normed));
    gated.mul_(linear(weights_, "mlp.up_proj", normed));
    normed.reset();
    notify(Site::kMlpHidden, gated);
    h.add_(linear(weights_, "mlp.down_proj", gated));
    return h;
  }

 private:
  void notify(Site site, const at::Tensor& input) {
    if (observer_ == nullptr) return;
    const auto& groups = spec_.sequential_groups;
    for (size_t group_idx = 0; group_idx < groups.size(); ++group_idx) {
      if (site_of(groups[group_idx].front()) != site) continue;
      std::vector<std::vector<int64_t>> shapes;
      for (const auto& name : groups[group_idx]) shapes.push_back(weights_.at(name + ".weight").sizes().vec());
      observer_->before_group(static_cast<int>(group_idx), groups[group_idx], input, weights_);
      for (size_t idx = 0; idx < groups[group_idx].size(); ++idx) {
        const auto& name = groups[group_idx][idx];
        GPTQ_CHECK(weights_.at(name + ".weight").sizes().vec() == shapes[idx],
                   "observer replaced '", name, ".weight' with a tensor of another shape");
      }
    }
  }

  // normed [B, T, H] -> attention output [B, T, n_heads * head_dim], in row chunks.
  at::Tensor attention(const at::Tensor& normed) {
    const int64_t n_rows = normed.size(0);
    if (n_rows <= attention_chunk_) return attention_rows(normed);
    std::vector<at::Tensor> parts;
    for (int64_t row_start = 0; row_start < n_rows; row_start += attention_chunk_) {
      parts.push_back(attention_rows(normed.narrow(0, row_start, std::min(attention_chunk_, n_rows - row_start))));
    }
    return at::cat(parts, 0);
  }

  at::Tensor project_heads(const std::string& linear_name, const at::Tensor& x, int64_t n_heads,
                           const std::string& norm) {
    at::Tensor out = linear(weights_, linear_name, x).view({x.size(0), x.size(1), n_heads, config_.head_dim});
    if (!norm.empty()) out = rms_norm(out, weights_.at(norm + ".weight"), config_.rms_norm_eps);
    return out.transpose(1, 2);
  }

  at::Tensor attention_rows(const at::Tensor& x) {
    const int64_t n_rows = x.size(0);
    const int64_t n_tokens = x.size(1);
    GPTQ_CHECK(n_tokens <= rope_.max_positions(), "sequence of ", n_tokens,
               " tokens is longer than the rotary cache (", rope_.max_positions(), ")");
    at::Tensor q = project_heads("self_attn.q_proj", x, config_.n_heads, spec_.qk_norm ? spec_.q_norm : "");
    at::Tensor k = project_heads("self_attn.k_proj", x, config_.n_kv_heads, spec_.qk_norm ? spec_.k_norm : "");
    at::Tensor v = project_heads("self_attn.v_proj", x, config_.n_kv_heads, "");
    at::Tensor cos = rope_.cos().narrow(0, 0, n_tokens);
    at::Tensor sin = rope_.sin().narrow(0, 0, n_tokens);
    q = apply_rotary(q, cos, sin);
    k = apply_rotary(k, cos, sin);

    const double scale = 1.0 / std::sqrt(static_cast<double>(config_.head_dim));
    const int64_t n_rep = config_.n_heads / config_.n_kv_heads;
    const int64_t window = sliding_window_;
    at::Tensor out;
    if (window == 0 || n_tokens <= window) {
      out = at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, /*is_causal=*/true, scale,
                                             /*enable_gqa=*/n_rep > 1);
    } else {
      // Sliding window (as transformers' mask): key j visible from query i iff i - window < j <= i.
      at::Tensor positions = at::arange(n_tokens, at::TensorOptions().device(x.device()).dtype(at::kLong));
      at::Tensor offset = positions.unsqueeze(1) - positions.unsqueeze(0);
      at::Tensor mask = offset.ge(0).logical_and(offset.lt(window));
      auto repeat = [&](const at::Tensor& t) {
        return t.unsqueeze(2).expand({n_rows, config_.n_kv_heads, n_rep, n_tokens, config_.head_dim})
            .reshape({n_rows, config_.n_heads, n_tokens, config_.head_dim});
      };
      out = at::scaled_dot_product_attention(q, repeat(k), repeat(v), mask, 0.0, false, scale);
    }
    return out.transpose(1, 2).reshape({n_rows, n_tokens, config_.n_heads * config_.head_dim});
  }

 public:
  int64_t sliding_window_ = 0;

 private:
  const ModelConfig& config_;
  const ArchSpec& spec_;
  BlockWeights& weights_;
  const RotaryCache& rope_;
  GroupObserver* observer_;
  int64_t attention_chunk_;
};

int64_t auto_batch_chunk(const ModelConfig& config, int64_t n_tokens) {
  constexpr double kBudgetBytes = 256.0 * 1024 * 1024;
  const double per_row = static_cast<double>(n_tokens) * 4.0 *
                         (3.0 * config.intermediate_size + 4.0 * config.hidden_size +
                          3.0 * config.n_heads * config.head_dim);
  return std::max<int64_t>(1, static_cast<int64_t>(kBudgetBytes / per_row));
}

void check_group_order(const ArchSpec& spec) {
  Site previous = Site::kAttentionInput;
  for (const auto& group : spec.sequential_groups) {
    GPTQ_ASSERT(!group.empty(), "empty sequential group in ", spec.architecture);
    Site site = site_of(group.front());
    for (const auto& name : group) GPTQ_ASSERT(site_of(name) == site, "group mixes inputs: ", name);
    GPTQ_ASSERT(site >= previous, "sequential groups out of block order in ", spec.architecture);
    previous = site;
  }
}

}  // namespace

at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t head_dim) {
  at::Tensor exponent = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(head_dim);
  at::Tensor inv_freq = at::pow(rope.theta, exponent).reciprocal();
  if (rope.type == RopeType::kLinear) return inv_freq / rope.factor;
  if (rope.type == RopeType::kDefault) return inv_freq;
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / rope.low_freq_factor;
  const double high_freq_wavelen = old_context / rope.high_freq_factor;
  at::Tensor wavelen = (2.0 * M_PI) / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
  at::Tensor smooth = (old_context / wavelen - rope.low_freq_factor) /
                      (rope.high_freq_factor - rope.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  at::Tensor is_medium = wavelen.lt(high_freq_wavelen).logical_not().logical_and(
      wavelen.gt(low_freq_wavelen).logical_not());
  return at::where(is_medium, smoothed, scaled);
}

RotaryCache::RotaryCache(const ModelConfig& config, int64_t max_positions, c10::ScalarType dtype,
                         c10::Device device)
    : max_positions_(max_positions) {
  at::Tensor inv_freq = rope_inv_freq(config.rope, config.head_dim).to(device);
  at::Tensor positions = at::arange(max_positions, at::TensorOptions().device(device).dtype(at::kLong)).to(at::kFloat);
  at::Tensor freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  cos_ = emb.cos().to(dtype);
  sin_ = emb.sin().to(dtype);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  x32 = x32 * at::rsqrt(variance + eps);
  return weight * x32.to(x.scalar_type());
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

at::Tensor block_forward(const ModelConfig& config, BlockWeights& weights, const at::Tensor& hidden,
                         const RotaryCache& rope, GroupObserver* observer, const BlockOptions& options) {
  GPTQ_CHECK(hidden.dim() == 3 && hidden.size(2) == config.hidden_size, "block input must be [B, T, ",
             config.hidden_size, "], got ", hidden.sizes());
  check_group_order(config.arch);
  const int64_t n_rows = hidden.size(0);
  const int64_t chunk = options.batch_chunk > 0 ? options.batch_chunk : auto_batch_chunk(config, hidden.size(1));
  const int64_t window =
      weights.layer >= 0 && weights.layer < static_cast<int>(config.sliding_window.size())
          ? config.sliding_window[weights.layer]
          : 0;

  auto run = [&](const at::Tensor& rows, GroupObserver* hook) {
    BlockRun block(config, weights, rope, hook, chunk);
    block.sliding_window_ = window;
    return block.forward(rows);
  };
  if (observer != nullptr || n_rows <= chunk) return run(hidden, observer);
  std::vector<at::Tensor> parts;
  for (int64_t row_start = 0; row_start < n_rows; row_start += chunk) {
    parts.push_back(run(hidden.narrow(0, row_start, std::min(chunk, n_rows - row_start)), nullptr));
  }
  return at::cat(parts, 0);
}

at::Tensor embed(const at::Tensor& embedding, const at::Tensor& ids) {
  return at::embedding(embedding, ids.to(embedding.device(), at::kLong));
}

at::Tensor final_norm_and_logits(const ModelConfig& config, const HeadWeights& head,
                                 const at::Tensor& hidden) {
  return at::linear(rms_norm(hidden, head.final_norm, config.rms_norm_eps), head.lm_head);
}

}  // namespace gptq::model
