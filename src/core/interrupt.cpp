#include "gptq/core/interrupt.h"

#include <atomic>
#include <csignal>
#include <string>

#include "gptq/core/error.h"

namespace gptq {
namespace {

std::atomic<int> g_pending{0};

extern "C" void on_interrupt(int signal_number) {
  int expected = 0;
  if (!g_pending.compare_exchange_strong(expected, signal_number)) {
    std::signal(signal_number, SIG_DFL);  // second signal: stop now
    std::raise(signal_number);
  }
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // I/O in progress continues; the flag is polled
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::signal(SIGXFSZ, SIG_IGN);
}

int pending_interrupt() { return g_pending.load(); }

void throw_if_interrupted(std::string_view where) {
  const int signal_number = g_pending.load();
  if (signal_number == 0) return;
  const char* name = signal_number == SIGINT ? "SIGINT" : signal_number == SIGTERM ? "SIGTERM" : "a signal";
  throw InterruptedError(std::string(name) + " received during " + std::string(where) +
                             "; stopped cleanly, no output written",
                         signal_number);
}

}  // namespace gptq
