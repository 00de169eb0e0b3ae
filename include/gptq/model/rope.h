#pragma once
// Rotary position embeddings: the inverse frequencies of a RopeConfig
// (default, linear, llama3 or YaRN, as transformers' ROPE_INIT_FUNCTIONS),
// the cos/sin tables built from them, and their application to q and k.
//
// cos/sin are computed in fp32 and cast to the compute dtype (as HF); YaRN's
// attention_factor scales both in fp32 before the cast.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

#include "gptq/model/config.h"

namespace gptq::model {

// cos/sin tables [max_positions, rotary_dim] (rotate_half layout: the
// frequencies repeated twice), in `dtype` on `device`.
class RotaryCache {
 public:
  RotaryCache(const ModelConfig& config, int64_t max_positions, c10::ScalarType dtype,
              c10::Device device);
  // Table 0: config.rope; table 1: config.sliding_rope (Gemma-3), when set.
  // [max_positions, rotary_dim].
  const at::Tensor& cos(int table = 0) const;
  const at::Tensor& sin(int table = 0) const;
  int64_t max_positions() const { return max_positions_; }

 private:
  std::vector<at::Tensor> cos_;
  std::vector<at::Tensor> sin_;
  int64_t max_positions_ = 0;
};

// inv_freq [rotary_dim / 2] float32 for `rope` (default, linear, llama3 or yarn).
at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t rotary_dim);

// x [B, heads, T, head_dim]; cos/sin [T, rotary_dim]: x*cos + rotate_half(x)*sin
// over the first rotary_dim dims, the rest unchanged.
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace gptq::model
