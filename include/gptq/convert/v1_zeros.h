#pragma once
// GPTQ v2 -> v1 zero points: what v1 ("zero - 1" per field, pack/gptq_pack.h)
// cannot hold and the lossy re-encoding that --allow-lossy applies.
//
// A "group" here is one (group index, output row) pair: one zero and one scale.
// v1 readers that unpack per field (vLLM, AutoGPTQ) read a stored zero of 0 as
// 2^bits, so a v2 group with zero 0 must change before it is written as v1.
// reencode_for_v1 moves each such group to the nearest grid with zero 1:
//   - if the group's codes stop below maxq, codes + 1 with zero 1 and the same
//     scale give the same values: exact (counted, change 0);
//   - otherwise the grid keeps its range [0, maxq * scale] with zero 1: scale'
//     = fp16(scale * maxq / (maxq - 1)), code' = clamp(round(w / scale') + 1,
//     0, maxq) where w is the group's dequantized weight; the change of each
//     weight is at most about scale' / 2 and is measured, never assumed.
// Groups with a zero >= 1 are untouched. Inputs are UnpackedGptq (CPU).
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "gptq/pack/gptq_pack.h"

namespace gptq::convert {

// Groups (group, output row) whose zero point is 0.
int64_t count_zero_zeros(const pack::UnpackedGptq& linear);

struct V1Reencoding {
  pack::UnpackedGptq linear;     // every zero >= 1
  int64_t n_groups_changed = 0;  // zeros that were 0
  int64_t n_groups_requantized = 0;  // of those, groups whose codes had to move to a new scale
  double max_abs_change = 0.0;   // max |W' - W| of the dequantized weight (fp32)
};
V1Reencoding reencode_for_v1(const pack::UnpackedGptq& linear, int bits);

}  // namespace gptq::convert
