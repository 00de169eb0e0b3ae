#pragma once
// SIGINT and SIGTERM as a flag that long jobs poll between linears and
// blocks, so a run stops at a clean point: the temporary output is removed
// by its owner's destructor, finished blocks stay in the work directory for
// --resume (the pipeline adds how to its message), one line is printed, and the exit status is
// 128 + the signal (130 / 143). A second signal of either kind while the
// first is pending terminates at once (the user insists).
//
// SIGXFSZ (a file-size limit, ulimit -f) is ignored, so writing past it
// fails as a write error naming the file instead of killing the process.
#include <string_view>

namespace gptq {

// Installs the handlers; call once, at start-up of the executable.
void install_interrupt_handlers();

// The signal received and not yet honoured, or 0.
int pending_interrupt();

// Throws InterruptedError ("SIGTERM received during <where>; ...") when a
// signal is pending.
void throw_if_interrupted(std::string_view where);

}  // namespace gptq
