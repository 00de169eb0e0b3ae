#pragma once
// The sparse (MoE) MLP's router and expert math, as transformers computes them
// (MixtralSparseMoeBlock, Qwen2/3MoeSparseMoeBlock, OlmoeSparseMoeBlock):
//   probs  = softmax(router(x).float())            [n, n_experts] fp32
//   w, e   = topk(probs, top_k)                    renormalised when the layer says so
//   out[t] = sum_j w[t, j] * expert_{e[t, j]}(x[t])  summed in fp32, rounded once
//            (+ sigmoid(shared_gate(x)) * shared(x))
// with expert(x) = down(silu(gate(x)) * up(x)). Mixtral keeps w in fp32 and
// scales expert outputs in fp32; the others cast w to the compute dtype.
// DeepSeek-V3 (DeepseekV3TopkRouter, RouterKind::kSigmoidGroupLimited) picks
// e by sigmoid scores plus a bias within the best groups, w from the unbiased
// scores times routed_scaling_factor, all fp32 and kept fp32; its shared
// expert is added ungated.
//
// Tokens are grouped by expert once (a stable sort of the n * top_k
// assignments), so each expert runs on exactly the tokens routed to it.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "gptq/model/arch.h"
#include "gptq/model/weights.h"

namespace gptq::model {

struct ExpertRouting {
  int64_t n_tokens = 0;
  int64_t top_k = 0;
  at::Tensor top_index;   // [n, top_k] int64
  at::Tensor top_weight;  // [n, top_k]: fp32 (Mixtral) or the compute dtype
  // The n * top_k assignments grouped by expert (ascending), tokens ascending
  // within an expert: expert e owns [offsets[e], offsets[e + 1]).
  at::Tensor tokens;      // [n * top_k] int64 token index
  at::Tensor weights;     // [n * top_k] its routing weight
  std::vector<int64_t> offsets;  // [n_experts + 1]

  int64_t count(int expert) const { return offsets[expert + 1] - offsets[expert]; }
  // Token indices [count] and routing weights [count] of `expert`, as views.
  at::Tensor expert_tokens(int expert) const;
  at::Tensor expert_weights(int expert) const;
};

// Routes x [n, hidden] through the layer's router (weights[<router>.weight]).
ExpertRouting route_tokens(const LayerSpec& layer, const BlockWeights& weights, const at::Tensor& x);

// act(gate(x)) * up(x) of the gated MLP whose gate/up linears are given.
at::Tensor gated_hidden(const BlockWeights& weights, const std::string& gate, const std::string& up,
                        const at::Tensor& x, Activation activation = Activation::kSilu);

// The gated MLP's activation applied to `gate` in place (the op transformers'
// ACT2FN entry runs).
at::Tensor& activate_(Activation activation, at::Tensor& gate);

// Expert output y [count, hidden] times its routing weights [count] (the
// product in fp32 when the weights are fp32, else in y's dtype), as fp32: a
// token's top-k contributions are summed in fp32 and rounded once, as
// transformers' default ("grouped_mm") experts path sums them.
at::Tensor scale_by_routing(const at::Tensor& y, const at::Tensor& routing_weights);

}  // namespace gptq::model
