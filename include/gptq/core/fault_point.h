#pragma once
// Fault injection for the crash-consistency tests. With the environment
// variable GPTQ_FAULT_POINT=<name>[:<n>] the process kills itself with
// SIGKILL the n-th time (default: the first) it reaches fault_point(<name>),
// exactly as a power cut or the OOM killer would stop it: no destructor, no
// flush. Tests use it to stop a run at a chosen moment (during a block's
// write, during the final shard write, just before the output's rename) and
// check that --resume still gives the same bytes. Unset, a fault point costs
// one comparison. The names in use are listed in docs/resume.md.
#include <string_view>

namespace gptq {

void fault_point(std::string_view name);

}  // namespace gptq
