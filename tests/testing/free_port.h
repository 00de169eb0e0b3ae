#pragma once
// A loopback TCP port nobody listens on right now (the kernel's pick for
// port 0), for tests that start a rendezvous store.
namespace gptq::testing {

int free_port();

}  // namespace gptq::testing
