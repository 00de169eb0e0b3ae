#include "gptq/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <unistd.h>

namespace gptq::log {

void setup(Verbosity verbosity) {
  static auto logger = [] {
    auto created = spdlog::stderr_color_mt("gptq");
    created->set_pattern("%^%l%$: %v");
    spdlog::set_default_logger(created);
    return created;
  }();
  switch (verbosity) {
    case Verbosity::kQuiet: logger->set_level(spdlog::level::warn); break;
    case Verbosity::kNormal: logger->set_level(spdlog::level::info); break;
    case Verbosity::kVerbose: logger->set_level(spdlog::level::debug); break;
  }
}

void tag_lines(const std::string& tag) {
  spdlog::default_logger()->set_pattern("%^%l%$: " + tag + " %v");
}

bool stderr_is_tty() { return isatty(STDERR_FILENO) == 1; }

}  // namespace gptq::log
