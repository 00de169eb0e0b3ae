#pragma once
// The GGUF output format of `quantize --format gguf` (pack::OutputFormat):
// each linear becomes the ggml type its file type gives it
// (gguf/gguf_model.h: llama-quantize's per-tensor rules), GPTQ solves on that
// type's own grid (gguf/ggml_grid.h), so every code is exactly representable,
// and pack() stores the linear as ggml blocks (gguf/ggml_codec.h) under
// "<module>.weight", in HF row order (the Q/K rope permutation is applied when
// the file is assembled; it moves whole rows).
//
// Groups: 32 columns in original order for Q4_0/Q4_1/Q8_0 (fitted as GPTQ
// reaches them, or all before the sweep with static groups; act-order needs
// static groups, since ggml blocks cannot reorder columns: InputError naming
// the module otherwise); K-quants fix their super-block scales from the
// untouched weight, weighted by diag(H), before the sweep (static groups by
// construction, act-order allowed). A linear the file keeps unquantized
// (llama-quantize's F16 fallback for rows that are not whole blocks) stays in
// full precision.
#include <memory>

#include "gptq/gguf/gguf_model.h"
#include "gptq/pack/format.h"

namespace gptq::gguf {

// The scheme a linear solved on ggml type `type` runs with (grid named by
// the type, its code width and group size), keeping `asked`'s solver settings.
solver::Scheme ggml_scheme(GgmlType type, const solver::Scheme& asked);

// `plan` must outlive nothing: the format keeps its own copy.
std::unique_ptr<pack::OutputFormat> make_gguf_format(GgufModelPlan plan);

}  // namespace gptq::gguf
