#pragma once
// Progress for long work: on a TTY one redrawn line with a count and ETA; off a
// TTY nothing is redrawn and callers log one stable line per finished item.
#include <chrono>
#include <string>

namespace gptq {

class Progress {
 public:
  // total: number of items the work consists of; label: what is being done.
  Progress(std::string label, int total, bool enabled);
  ~Progress();

  // Marks one more item done; `item` names it ("model.layers.3.mlp.up_proj").
  void advance(const std::string& item);
  // Clears the redrawn line so the next log line starts clean.
  void finish();
  // Clears the redrawn line before a log line in mid-work; the next advance() redraws it.
  void clear_line();

  double elapsed_s() const;
  double eta_s() const;
  bool redraws() const { return redraw_; }

 private:
  std::string label_;
  int total_;
  int done_ = 0;
  bool redraw_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

// Seconds from `start` to now on the steady clock: how every phase is timed.
double seconds_since(std::chrono::steady_clock::time_point start);

// "1.5 GiB", "312.0 KiB".
std::string human_bytes(double bytes);
// "2m05s", "3.4s".
std::string human_seconds(double seconds);

}  // namespace gptq
