#pragma once
// Quantizing one decoder block with GPTQ, in ONE forward pass (true-sequential).
//
// The block runs on all calibration windows hidden [N, T, H], stage by stage
// and within each stage chunk by chunk of windows (model/forward.h). For each
// true-sequential group (ArchSpec::sequential_groups) block_forward hands the
// solving observer the group's exact input one chunk at a time, and the
// observer
//   1. accumulates the group's Hessian H = 2/n sum X^T X over all N*T rows
//      (fp32, solver::HessianAccumulator, chunk by chunk),
// then, once every chunk of that group was seen (finish_group),
//   2. solves every linear of the group with GPTQ against that one H,
//   3. packs the result and hands it to the sink,
//   4. replaces the linear's weight in the block by the dequantized weight,
// so the block continues with the quantized group and the next group's input
// already reflects it. For Llama that is: norm -> H(q,k,v) -> solve q,k,v ->
// attention with quantized q,k,v -> H(o) -> solve o -> residual + norm ->
// H(gate,up) -> solve -> act -> H(down) -> solve -> output, which is the next
// block's input. This equals the paper's staged procedure (re-run the block
// from its input once per group with the earlier groups quantized), which
// tests/calib/block_runner_test.cpp checks to float tolerance.
//
// Memory: tensors of hidden size for all N windows, those of intermediate
// size for one chunk; the MLP activation [N, T, intermediate] is held for
// down_proj's output only within BlockOptions::max_held_bytes, otherwise
// gate/up are recomputed per chunk (BlockStats says which).
//
// Without true-sequential every group's H comes from the unquantized block
// (one collecting pass), all linears are solved, then one more pass with the
// quantized weights produces the next input.
//
// Linears whose shape the GPTQ v1 format cannot pack (see pack/gptq_pack.h) are
// left in full precision and reported with quantized = false.
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "gptq/model/config.h"
#include "gptq/model/forward.h"
#include "gptq/model/weights.h"
#include "gptq/pack/gptq_pack.h"
#include "gptq/solver/gptq.h"

namespace gptq::calib {

// One solved (or skipped) linear.
struct LinearResult {
  std::string name;           // relative to the layer: "self_attn.q_proj"
  int64_t rows = 0;           // out_features
  int64_t cols = 0;           // in_features
  bool quantized = false;     // false: the shape is not packable, kept as is
  double loss = 0;            // solver loss (see solver::QuantizedWeight::loss)
  double damp_used = 0;
  double solve_s = 0;         // solve + pack time
  int64_t n_hessian_rows = 0; // rows (tokens) the Hessian was accumulated over
  pack::GptqTensors packed;   // valid when quantized
};

// Receives each linear as soon as it is solved.
using LinearSink = std::function<void(LinearResult&&)>;

// Time spent per phase, accumulated over blocks.
struct PhaseTimes {
  double forward_s = 0;   // block forwards excluding observer work
  double hessian_s = 0;   // H accumulation
  double solve_s = 0;     // GPTQ solves and packing
};

// Whether pack_gptq can store a linear [rows=out, cols=in] at `bits`.
bool packable(int64_t rows, int64_t cols, int bits);

// Quantizes the linears of one group against one Hessian (or RTN when H is
// undefined), replacing their weights in `weights` by the dequantized ones.
void quantize_group(const std::vector<std::string>& linear_names, const at::Tensor& H,
                    int64_t n_hessian_rows, const solver::GptqConfig& config,
                    model::BlockWeights& weights, const LinearSink& sink, PhaseTimes& times);

struct BlockQuantizeOptions {
  solver::GptqConfig gptq;
  bool true_sequential = true;
  model::BlockOptions block;
};

// Quantizes block `weights` in place against calibration input `hidden`
// [N, T, H] and returns the block's output computed with the quantized weights.
// `stats` (optional) receives how the observed pass chunked and whether it
// recomputed the MLP activation.
at::Tensor quantize_block_gptq(const model::ModelConfig& config, model::BlockWeights& weights,
                               const at::Tensor& hidden, const model::RotaryCache& rope,
                               const BlockQuantizeOptions& options, const LinearSink& sink,
                               PhaseTimes& times, model::BlockStats* stats = nullptr);

// Round-to-nearest for every linear of the block (no calibration).
void quantize_block_rtn(const model::ModelConfig& config, model::BlockWeights& weights,
                        const solver::QuantConfig& quant, const LinearSink& sink,
                        PhaseTimes& times);

}  // namespace gptq::calib
