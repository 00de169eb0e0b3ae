// RoPE inverse frequencies (default, linear, llama3, YaRN), the cos/sin
// tables, and rotate_half. Each scaling follows transformers'
// ROPE_INIT_FUNCTIONS op for op, so the tables match theirs bit for bit.
#include "gptq/model/rope.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "gptq/core/error.h"

namespace gptq::model {
namespace {

// transformers' _compute_yarn_parameters, op for op: pos_freqs = theta^(2i/d);
// the dims between the correction bounds ramp from extrapolated (1/pos_freqs)
// to interpolated (1/(factor pos_freqs)) frequencies.
at::Tensor yarn_inv_freq(const RopeConfig& rope, const at::Tensor& pos_freqs, int64_t dim) {
  const double rotary_dim = static_cast<double>(dim);
  const double context = static_cast<double>(rope.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return (rotary_dim * std::log(context / (rotations * 2 * M_PI))) / (2 * std::log(rope.theta));
  };
  double low = correction_dim(rope.beta_fast);
  double high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, rotary_dim - 1);
  if (low == high) high += 0.001;  // no zero-width ramp
  const at::Tensor ramp = at::clamp(at::div(at::sub(at::arange(dim / 2, at::kLong).to(at::kFloat), low), high - low), 0, 1);
  const at::Tensor extrapolation_factor = at::rsub(ramp, 1);
  const at::Tensor extrapolation = pos_freqs.reciprocal();
  const at::Tensor interpolation = at::mul(pos_freqs, rope.factor).reciprocal();
  return interpolation * at::rsub(extrapolation_factor, 1) + extrapolation * extrapolation_factor;
}

// transformers' _compute_llama3_parameters: wavelengths longer than the
// original context / low_freq_factor are divided by factor, shorter than
// context / high_freq_factor kept, the band between smoothly interpolated.
at::Tensor llama3_inv_freq(const RopeConfig& rope, const at::Tensor& inv_freq) {
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

}  // namespace

at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t rotary_dim) {
  at::Tensor exponent = at::arange(0, rotary_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(rotary_dim);
  if (rope.type == RopeType::kYarn) return yarn_inv_freq(rope, at::pow(rope.theta, exponent), rotary_dim);
  at::Tensor inv_freq = at::pow(rope.theta, exponent).reciprocal();
  if (rope.type == RopeType::kLinear) return inv_freq / rope.factor;
  if (rope.type == RopeType::kDefault) return inv_freq;
  return llama3_inv_freq(rope, inv_freq);
}

RotaryCache::RotaryCache(const ModelConfig& config, int64_t max_positions, c10::ScalarType dtype,
                         c10::Device device)
    : max_positions_(max_positions) {
  std::vector<RopeConfig> ropes = {config.rope};
  if (config.sliding_rope) ropes.push_back(*config.sliding_rope);
  const int64_t rotary_dim = config.rotary_dim > 0 ? config.rotary_dim : config.head_dim;
  at::Tensor positions = at::arange(max_positions, at::TensorOptions().device(device).dtype(at::kLong)).to(at::kFloat);
  for (const RopeConfig& rope : ropes) {
    at::Tensor inv_freq = rope_inv_freq(rope, rotary_dim).to(device);
    at::Tensor freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    // YaRN's attention factor (1 elsewhere) scales both, in fp32, before the cast.
    cos_.push_back(at::mul(emb.cos(), rope.attention_factor).to(dtype));
    sin_.push_back(at::mul(emb.sin(), rope.attention_factor).to(dtype));
  }
}

const at::Tensor& RotaryCache::cos(int table) const {
  GPTQ_ASSERT(table >= 0 && table < static_cast<int>(cos_.size()), "no rotary table ", table);
  return cos_[table];
}

const at::Tensor& RotaryCache::sin(int table) const {
  GPTQ_ASSERT(table >= 0 && table < static_cast<int>(sin_.size()), "no rotary table ", table);
  return sin_[table];
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rotary_dim = cos.size(-1);
  if (rotary_dim < x.size(-1)) {
    // Partial rotary: the first rotary_dim dims rotate, the rest pass through.
    const at::Tensor rotated = apply_rotary(x.narrow(-1, 0, rotary_dim), cos, sin);
    return at::cat({rotated, x.narrow(-1, rotary_dim, x.size(-1) - rotary_dim)}, -1);
  }
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

}  // namespace gptq::model
