#pragma once
// The output of a quantize job: a checkpoint directory in one of the
// checkpoint formats (pack/format.h: gptq, gptq_v2) or one GGUF file
// (gguf/gguf_format.h), chosen by QuantizeOptions::format.
//
// A GGUF run solves on the ggml grids its file type gives each linear
// (llama-quantize's per-tensor choices), keeps the packed blocks in the work
// directory like any other run, and assembles the file at the end from them
// and from the checkpoint's other tensors (embeddings and lm_head rounded to
// nearest on their own ggml types, norms in F32).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gptq/calib/quantize_pipeline.h"
#include "gptq/calib/work_dir.h"
#include "gptq/io/safetensors.h"
#include "gptq/model/config.h"
#include "gptq/pack/format.h"

namespace gptq::calib {

// Every --format value.
std::vector<std::string> output_format_names();

// The format of `options` for `config`. InputError for an unknown format or
// GGUF file type, or options GGUF cannot honour (a recipe, an unquantized
// file type; act-order without static groups on the 32-column types is
// refused per module by the format); UnsupportedError for a family GGUF has
// no mapping for (naming config.json).
std::unique_ptr<pack::OutputFormat> make_format(const QuantizeOptions& options, const model::ModelConfig& config,
                                                const io::Checkpoint& checkpoint);

// Writes the GGUF file options.output_dir from the packed linears of steps
// [0, n_steps) of `work` and the checkpoint's other tensors; returns its size.
uint64_t write_gguf_output(const QuantizeOptions& options, const model::ModelConfig& config,
                           const io::Checkpoint& checkpoint, const WorkDir& work, int n_steps);

}  // namespace gptq::calib
