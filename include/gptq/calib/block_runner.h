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
//   2. solves the group's linears with GPTQ against that one H: linears with
//      the same scheme are stacked row-wise into ONE solve (rows are
//      independent given H, so this equals solving them one by one) and so
//      share the Hessian's checks, act-order permutation, damping and
//      Cholesky factorization; linears of different schemes solve apart,
//   3. hands each linear's codes and grid to the sink (which packs them in
//      the output format),
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
// Which linears are quantized and how is the SchemeResolver's answer for
// "<layer prefix><linear>" (solver/scheme.h); a linear it keeps in full
// precision, or whose shape the output format cannot store, is left as it is
// and reported with quantized = false and the reason.
#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "gptq/dist/communicator.h"
#include "gptq/model/config.h"
#include "gptq/model/forward.h"
#include "gptq/model/weights.h"
#include "gptq/pack/format.h"
#include "gptq/solver/gptq.h"
#include "gptq/solver/scheme.h"

namespace gptq::calib {

// One solved (or skipped) linear.
struct LinearResult {
  std::string name;           // relative to the layer: "self_attn.q_proj"
  int64_t rows = 0;           // out_features
  int64_t cols = 0;           // in_features
  bool quantized = false;     // false: kept as is, see skip_reason
  std::string skip_reason;    // when not quantized
  double loss = 0;            // solver loss (see solver::QuantizedWeight::loss)
  double damp_used = 0;
  double solve_s = 0;         // this linear's share (by rows) of its solve's time
  int64_t n_hessian_rows = 0; // rows (tokens) the Hessian was accumulated over
  int64_t n_zero_raised = 0;  // (group, row) grids whose zero the format's floor raised
  int n_stacked = 1;          // linears solved together in one stacked solve
  // Routed expert linears: how many tokens the router sent and which fed the Hessian.
  std::optional<model::GroupRouting> routing;
  // Linears solved as one batch of independent groups (a site's routed
  // experts, solved concurrently on CPU): the batch's label and how many of
  // its results follow this one (0: the last), so logs can show one line per batch.
  std::string batch;
  int batch_remaining = 0;
  double batch_wall_s = 0;    // the whole batch's wall time (set on its last result)
  // GPTQ failed numerically (Cholesky after every damping retry, a non-finite
  // result) and --on-solve-failure rtn rounded it to nearest instead: why.
  std::string solve_failure;
  solver::Scheme scheme;      // as the solver ran it (method rtn after a fallback); valid when quantized
  pack::SolvedLinear solved;  // codes and grid; valid when quantized
};

// Receives each linear as soon as it is solved.
using LinearSink = std::function<void(LinearResult&&)>;

// Time spent per phase, accumulated over blocks.
struct PhaseTimes {
  double forward_s = 0;   // block forwards excluding observer work
  double hessian_s = 0;   // H accumulation
  double solve_s = 0;     // GPTQ solves and packing
};

// One stacked solve run somewhere else (SolveContext::solve).
using SolveFunction = std::function<solver::QuantizedWeight(const at::Tensor& W, const at::Tensor& H,
                                                             const solver::GptqConfig& config,
                                                             solver::SolveMethod method)>;

// What every solve of a job needs: which scheme each linear gets, the format
// it is stored in (its solver_scheme), and the solver settings (damping,
// act-order, static groups, block size; the grid settings come from the scheme).
struct SolveContext {
  const solver::SchemeResolver* schemes = nullptr;  // required
  const pack::OutputFormat* format = nullptr;       // required
  solver::GptqConfig gptq;
  std::string layer_prefix;  // "model.layers.3.": resolver names are full names
  // A GPTQ solve that fails numerically: false rethrows (naming the linear),
  // true warns and rounds that stack to nearest (plain RTN, no Hessian).
  bool rtn_on_solve_failure = false;
  // Data-parallel runs (dist/communicator.h): each process holds some of the
  // calibration windows. Every Hessian is summed over the processes before
  // its solve (reduce_hessian), and every stacked solve is split by rows
  // across them (rows are independent given H), its results gathered so each
  // process continues with the same quantized weights. nullptr: one process.
  dist::Communicator* comm = nullptr;
  // Where each stacked solve runs: empty solves here; set, it is called with
  // exactly what the local call would get (W, H or undefined, the config
  // after solve_config and the format's grid, the scheme's method) and must
  // return what that call returns (rpc::RemoteSolver for --workers).
  SolveFunction solve;
};

// The Hessian over every process's rows: each process's mean H (over its
// n_rows; undefined when it saw none) weighted by n_rows, summed, divided by
// the total, which n_rows becomes. A process that saw no rows passes an
// undefined H ([n_cols, n_cols] zeros on `device` stand in). Without comm: H as it is.
at::Tensor reduce_hessian(at::Tensor H, int64_t n_cols, c10::Device device, int64_t& n_rows,
                          dist::Communicator* comm, const std::string& what);

// Quantizes the linears of one group against one Hessian (or RTN when H is
// undefined), replacing their weights in `weights` by the dequantized ones.
// `routing` (a routed expert's group): recorded in each result, and a warning
// when too few tokens were routed and the Hessian came from all tokens.
void quantize_group(const std::vector<std::string>& linear_names, const at::Tensor& H,
                    int64_t n_hessian_rows, const SolveContext& context,
                    model::BlockWeights& weights, const LinearSink& sink, PhaseTimes& times,
                    const model::GroupRouting* routing = nullptr);

struct BlockQuantizeOptions {
  SolveContext solve;
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
                        const SolveContext& context, const LinearSink& sink, PhaseTimes& times);

}  // namespace gptq::calib
