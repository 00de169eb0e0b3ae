#include "gptq/core/fault_point.h"

#include <csignal>
#include <cstdlib>
#include <mutex>
#include <string>

namespace gptq {
namespace {

struct Armed {
  std::string name;  // empty: disarmed
  long hits_left = 0;
};

// Parsed once; "name" or "name:n".
Armed& armed() {
  static Armed state = [] {
    Armed parsed;
    const char* spec = std::getenv("GPTQ_FAULT_POINT");
    if (spec == nullptr || *spec == '\0') return parsed;
    std::string text = spec;
    parsed.hits_left = 1;
    if (auto colon = text.rfind(':'); colon != std::string::npos) {
      parsed.hits_left = std::max(1L, std::strtol(text.c_str() + colon + 1, nullptr, 10));
      text.resize(colon);
    }
    parsed.name = text;
    return parsed;
  }();
  return state;
}

}  // namespace

void fault_point(std::string_view name) {
  Armed& state = armed();
  if (state.name.empty() || state.name != name) return;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (--state.hits_left == 0) std::raise(SIGKILL);
}

}  // namespace gptq
