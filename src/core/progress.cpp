#include "gptq/core/progress.h"

#include <cmath>
#include <cstdio>

#include "gptq/core/log.h"

namespace gptq {

Progress::Progress(std::string label, int total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      redraw_(enabled && log::stderr_is_tty()),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double Progress::eta_s() const {
  if (done_ == 0) return NAN;
  return elapsed_s() / done_ * (total_ - done_);
}

void Progress::advance(const std::string& item) {
  ++done_;
  if (!redraw_) return;
  std::string eta = done_ < total_ ? " ETA " + human_seconds(eta_s()) : "";
  std::fprintf(stderr, "\r\033[K%s [%d/%d] %s%s", label_.c_str(), done_, total_, item.c_str(),
               eta.c_str());
  std::fflush(stderr);
}

void Progress::clear_line() {
  if (redraw_ && !finished_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
}

void Progress::finish() {
  if (redraw_ && !finished_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
  finished_ = true;
}

std::string human_bytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, kUnits[unit]);
  return buffer;
}

std::string human_seconds(double seconds) {
  char buffer[32];
  if (!std::isfinite(seconds)) return "?";
  if (seconds < 60) {
    std::snprintf(buffer, sizeof buffer, "%.1fs", seconds);
  } else if (seconds < 3600) {
    std::snprintf(buffer, sizeof buffer, "%dm%02ds", int(seconds) / 60, int(seconds) % 60);
  } else {
    std::snprintf(buffer, sizeof buffer, "%dh%02dm", int(seconds) / 3600, int(seconds) % 3600 / 60);
  }
  return buffer;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace gptq
