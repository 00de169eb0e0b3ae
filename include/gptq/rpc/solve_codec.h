#pragma once
// One layer-solve job in wire form (transport.h) and back, for both ends.
//
// Request: settings (the solver::GptqConfig after solver::solve_config, and
// the method), tensors "W" (float32/float16/bfloat16 [rows, cols]) and,
// for GPTQ or a weighted RTN, "H" (float32 [cols, cols]).
// Reply: every tensor of solver::QuantizedWeight under its field name
// (codes, scales, zeros, grid_zeros, g_idx, dequantized, row_loss,
// zero_raised; an undefined one is left out) plus loss and damp_used.
// Only the min-max integer grid travels: a job on a named grid (GGUF's) is
// solved locally by the client.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "gptq/rpc/transport.h"
#include "gptq/solver/gptq.h"
#include "gptq/solver/scheme.h"

namespace gptq::rpc {

// `config` is what the solve runs with (solve_config(base, scheme)); its grid must be null.
WireRequest encode_request(const at::Tensor& W, const at::Tensor& H, const solver::GptqConfig& config,
                           solver::SolveMethod method);

// Server side: decodes, checks and solves with the same calls a local run
// makes (gptq_quantize / rtn_quantize) on `device`. InputError for a
// malformed request (unknown method or grid, wrong dtype or shape, NaN/Inf
// in W or H, settings out of range); the solver's NumericalError as it comes.
solver::QuantizedWeight solve_request(const WireRequest& request, const c10::Device& device);

WireReply encode_reply(const solver::QuantizedWeight& solved);

// Client side: the reply as a QuantizedWeight on the CPU; Error (a wrong
// answer: missing tensor, wrong dtype or shape, codes past the grid) unless
// it fits the job of W [rows, cols] solved with `config`.
solver::QuantizedWeight decode_reply(const WireReply& reply, int64_t rows, int64_t cols,
                                     const solver::GptqConfig& config);

// A tensor's bytes and back (CPU, contiguous); UnsupportedError for a dtype
// the wire lacks, InputError for a wire tensor whose bytes do not fit its shape.
WireTensor to_wire(const std::string& name, const at::Tensor& tensor);
at::Tensor from_wire(const WireTensor& tensor);

}  // namespace gptq::rpc
