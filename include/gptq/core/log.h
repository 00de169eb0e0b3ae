#pragma once
// Logging: spdlog to stderr, stdout is reserved for results (--json).
// Messages start lowercase and name the thing they are about.
#include <spdlog/spdlog.h>

#include <string>

namespace gptq::log {

enum class Verbosity { kQuiet, kNormal, kVerbose };

// Installs the stderr logger once; safe to call again to change verbosity.
void setup(Verbosity verbosity);

// Puts `tag` ("[rank 1]") after the level of every later line, so the
// interleaved output of several processes stays attributable.
void tag_lines(const std::string& tag);

// True when stderr is a terminal (progress lines are redrawn only then).
bool stderr_is_tty();

}  // namespace gptq::log
