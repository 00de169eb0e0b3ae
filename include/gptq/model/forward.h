#pragma once
// The decoder forward in libtorch, equal to transformers' modeling_llama /
// mistral / qwen2 / qwen3 and the MoE families' (sdpa attention; the sparse
// MLP as model/moe.h) for the same weights and dtype:
//   h   = x + o_proj(attn(rope(q_norm?(q_proj(n1))), rope(k_norm?(k_proj(n1))), v_proj(n1)))
//   out = h + down_proj(silu(gate_proj(n2)) * up_proj(n2))
// with n1 = input_layernorm(x), n2 = post_attention_layernorm(h); causal
// attention (optionally a sliding window), GQA, scale 1/sqrt(head_dim).
// DeepSeek-V3's layers run multi-head latent attention (mla.h) instead; the
// observed forward then also feeds the latent sites (kQueryLatent, kKvLatent)
// between the input projections and o_proj.
//
// Which names, norms and groups a block has comes from its LayerSpec
// (config.layer(weights.layer)); nothing here names a family.
//
// Shapes: hidden [B, T, hidden_size] in the compute dtype (fp32, bf16 or fp16)
// on the compute device; all weights in the same dtype and device. RMSNorm
// runs in fp32 and casts back before the weight multiply (as LlamaRMSNorm).
// RoPE cos/sin are computed in fp32 and cast to the compute dtype (as HF).
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <functional>

#include <string>
#include <vector>

#include "gptq/model/config.h"
#include "gptq/model/weights.h"

namespace gptq::model {

// cos/sin tables [max_positions, head_dim] (rotate_half layout: the
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

// inv_freq [rotary_dim / 2] float32 for `rope` (default, linear or llama3).
at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t rotary_dim);

// weight * (x.float() * rsqrt(mean(x.float()^2, -1) + eps)).to(x.dtype)
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// ((x.float() * rsqrt(mean(x.float()^2, -1) + eps)) * (1 + weight.float())).to(x.dtype)
at::Tensor rms_norm_plus_one(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor apply_norm(NormKind kind, const at::Tensor& x, const at::Tensor& weight, double eps);

// x [B, heads, T, head_dim]; cos/sin [T, rotary_dim]: x*cos + rotate_half(x)*sin
// over the first rotary_dim dims, the rest unchanged.
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// One chunk of a group's input, as the group's linears consume it.
//   x            [rows, T, in_features]: every token of rows [row_start,
//                row_start + rows) of the batch (token_index undefined); or
//                [n, in_features]: a subset of the chunk's tokens (an expert's),
//                with token_index int64 [n] the flat index row * T + t of each
//                row of x within the whole batch (so routing weights, counts or
//                per-token data line up across chunks).
struct GroupInput {
  at::Tensor x;
  at::Tensor token_index;  // undefined: every token of the chunk
  int64_t row_start = 0;
};

// How a routed expert's group was fed (told to the observer before its first
// observe call).
struct GroupRouting {
  int64_t routed_tokens = 0;  // tokens the router sent to the expert
  int64_t fed_tokens = 0;     // tokens its Hessian is accumulated over
  // Every calibration token was fed: --moe-calibration all, or too few routed
  // tokens (fewer than BlockOptions::min_expert_tokens_per_input x in_features).
  bool all_tokens = false;
  bool too_few_routed = false;  // all_tokens because routed_tokens was below the threshold
};

// Sees the exact input of each true-sequential group before its linears run,
// one chunk of rows (calibration windows) at a time, so no group input is ever
// materialized for all rows at once.
//
// Contract, per group g = index into config.layer(weights.layer).groups:
//   observe(g, input)    once per row chunk, in row order, covering every row
//                        exactly once (for a subset group: every token routed
//                        to it, and only those); `input.x` is only valid during
//                        the call (copy what must outlive it). Weights must not
//                        change here. A group no token reaches gets no call.
//   finish_group(g, ...) once, after the last observe(g) and before any row
//                        runs through the group's linears; the observer may
//                        replace "<linear>.weight" (same shape, dtype, device)
//                        in `weights` and every row then runs with the
//                        replaced tensors.
// Groups that read the same input (same site in the block) see the same chunk
// and are finished in index order.
class GroupObserver {
 public:
  virtual ~GroupObserver() = default;
  virtual void observe(int group_index, const GroupInput& input) = 0;
  // Before the first observe(g) of a routed expert's group g.
  virtual void route_group(int group_index, const GroupRouting& routing) {
    (void)group_index;
    (void)routing;
  }
  virtual void finish_group(int group_index, const std::vector<std::string>& linear_names,
                            BlockWeights& weights) = 0;
  // Finishes groups that depend on nothing of each other (the routed experts
  // of one site: each its own weights and Hessian) as finish_group would each,
  // in any order or concurrently, touching no other group's weights. `label`
  // names them together for logs ("mlp.experts.0-127 gate_proj/up_proj").
  // Default: finish_group one by one, in order.
  virtual void finish_independent_groups(const std::vector<int>& group_indices,
                                         const std::vector<std::vector<std::string>>& linear_names,
                                         const std::string& label, BlockWeights& weights) {
    (void)label;
    for (size_t idx = 0; idx < group_indices.size(); ++idx) {
      finish_group(group_indices[idx], linear_names[idx], weights);
    }
  }
};

// Which tokens feed a routed expert's Hessians. The block output always
// follows the router.
enum class MoeCalibration {
  kRouted,  // the tokens routed to the expert (as inference sees it)
  kAll,     // every calibration token (llm-compressor's "calibrate all experts")
};

struct BlockOptions {
  // Rows of the batch processed together; every intermediate of intermediate
  // size ([rows, T, intermediate_size]) exists for at most this many rows.
  // 0: chosen so one chunk's activations stay near 256 MiB.
  int64_t batch_chunk = 0;
  // With an observer the block runs stage by stage over all rows; the MLP
  // activation silu(gate) * up feeds both down_proj's Hessian and the block
  // output. It is held for all rows when that takes at most this many bytes,
  // otherwise gate/up are recomputed per chunk for the output (the weights are
  // fixed by then, so the result is identical). 0: never hold.
  int64_t max_held_bytes = int64_t{1} << 30;
  MoeCalibration moe_calibration = MoeCalibration::kRouted;
  // kRouted: an expert group that was routed fewer than this many tokens per
  // input column gets its Hessian from every calibration token instead (and
  // the observer is told, GroupRouting::too_few_routed).
  int64_t min_expert_tokens_per_input = 2;
  // Not empty (CPU only): the observed pass keeps its tensors of hidden size
  // for all rows in files in this directory (model/activation_file.h), not in
  // RAM; results are identical.
  std::filesystem::path offload_dir;
  // Data-parallel runs (each process holds some of the windows): sums an
  // int64 tensor over every process in place. The MoE forward sends its
  // per-expert routed-token counts (and the token total) through it, so the
  // min_expert_tokens_per_input decision, and what the observer is told in
  // GroupRouting, is the same on every process. Unset: one process.
  std::function<void(at::Tensor&)> sum_over_processes;
};

// What a block_forward with an observer did (untouched without one).
struct BlockStats {
  int64_t rows_per_chunk = 0;       // rows (windows) per chunk
  int64_t n_chunks = 0;
  int64_t mlp_hidden_bytes = 0;     // [B, T, the layer's intermediate_size] in the compute dtype
  bool mlp_recomputed = false;      // true: gate/up recomputed per chunk, not held
  bool sparse_mlp = false;          // a MoE layer: expert activations are always recomputed
                                    // per span of tokens; mlp_hidden_bytes is top_k x tokens x
                                    // the experts' width
};

// One decoder block: hidden [B, T, H] -> [B, T, H]. Positions are 0..T-1 of
// each row; T <= rope.max_positions(). Without an observer each chunk runs the
// whole block; with one the block runs stage by stage (each group finished
// before its linears run) and keeps tensors of hidden size for all rows
// (input, a norm's output, attention output, residual), those of intermediate
// size per chunk (see BlockOptions::max_held_bytes for the one exception).
at::Tensor block_forward(const ModelConfig& config, BlockWeights& weights, const at::Tensor& hidden,
                         const RotaryCache& rope, GroupObserver* observer = nullptr,
                         const BlockOptions& options = {}, BlockStats* stats = nullptr);

// ids [B, T] int64 (any device) -> hidden [B, T, H] in embedding's dtype/device
// (times sqrt(hidden) for the families that scale it).
at::Tensor embed(const ModelConfig& config, const at::Tensor& embedding, const at::Tensor& ids);

// hidden [..., H] -> logits [..., vocab] in the compute dtype (final norm,
// lm_head, then Gemma-2's soft-cap).
at::Tensor final_norm_and_logits(const ModelConfig& config, const HeadWeights& head,
                                 const at::Tensor& hidden);

}  // namespace gptq::model
