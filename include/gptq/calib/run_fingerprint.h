#pragma once
// The fingerprint of a quantize run (calib/work_dir.h): every input that
// decides a byte of the output, as named parts, so a --resume with any of
// them changed names it instead of mixing two runs' blocks.
//
//   tool                 name and version (a new version may compute differently)
//   model config.json    FNV-1a of the file
//   model weights        FNV-1a over each safetensors file's name, size and header
//                        (the header fixes every tensor's dtype, shape and place;
//                        the data are not hashed: reading a 140 GB model to start
//                        would cost minutes; a file rewritten in place with the
//                        same header is not noticed)
//   calibration tokens   FNV-1a of the [N, T] token ids ("none" for RTN)
//   compute              dtype and device
//   one part per option that changes the result (bits, group_size, ..., chunking)
//   module schemes       FNV-1a of every module's resolved scheme (recipe + flags)
#include <ATen/core/Tensor.h>

#include <string>

#include "gptq/calib/quantize_pipeline.h"
#include "gptq/calib/work_dir.h"
#include "gptq/io/safetensors.h"

namespace gptq::calib {

Fingerprint run_fingerprint(const QuantizeOptions& options, const io::Checkpoint& checkpoint,
                            const at::Tensor& calibration_ids, const std::string& compute,
                            const std::string& module_schemes);

}  // namespace gptq::calib
