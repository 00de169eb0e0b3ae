// Model flags (--model, convert --input): a directory or a Hugging Face repo id.
#include "cli/command.h"
#include "gptq/core/log.h"
#include "gptq/io/hf_cache.h"

namespace gptq::cli {

std::string resolve_model_flag(const std::string& spec, const std::string& flag) {
  const std::string dir = io::resolve_model_dir(spec, flag).string();
  if (dir != spec) spdlog::info("{} '{}': Hugging Face cache snapshot '{}'", flag, spec, dir);
  return dir;
}

}  // namespace gptq::cli
