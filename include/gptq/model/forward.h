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
// on the compute device; all weights in the same dtype and device. The norms'
// numerics are norm.h's, the rotary tables rope.h's; what an observer sees and
// when it must finish a group is group_observer.h's contract.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>

#include "gptq/model/config.h"
#include "gptq/model/group_observer.h"
#include "gptq/model/rope.h"
#include "gptq/model/weights.h"
// Not used here: code that included forward.h for rms_norm/apply_norm keeps building.
#include "gptq/model/norm.h"

namespace gptq::model {

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
