#pragma once
// gptq::Error and its kinds: the one exception family the project throws.
//
//   kind              exit  message prefix        what it means
//   InputError         2    (none)                bad file, config, flag or tensor shape
//                                                 from the user: fix the input, do not retry
//   UnsupportedError   2    (none)                an architecture, dtype or format we do
//                                                 not handle
//   NumericalError     1    "numerical failure: " valid input, a computation that failed:
//                                                 a NaN/Inf or non-symmetric Hessian, a
//                                                 Cholesky failing after every damping
//                                                 retry, a non-finite result (retry with
//                                                 more damping, another dtype or more data)
//   Error (any other)  1    "runtime failure: "   the machine or our own code: I/O, out of
//                                                 memory, an internal invariant (a bug)
//   InterruptedError 128+N  "interrupted: "       SIGINT (130) / SIGTERM (143) honoured at a
//                                                 clean point; nothing partial is left
// describe() gives the message with the kind's prefix, as main prints it, so a
// script can tell the three exit-1 causes apart from one line.
//
// GPTQ_CHECK(cond, parts...) throws InputError for user input;
// GPTQ_CHECK_NUMERIC for a computation's result; GPTQ_ASSERT for our own
// invariants (a failure is a bug). Callers add context on the way up with
// rethrow_with_context("model.layers.3.mlp.down_proj").
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace gptq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  // Exit status main() should return for this error.
  virtual int exit_code() const { return 1; }
  // The kind's message prefix ("" for input errors).
  virtual const char* prefix() const { return "runtime failure: "; }
  // prefix() + what(): the one line main prints.
  std::string describe() const { return prefix() + std::string(what()); }
};

class InputError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 2; }
  const char* prefix() const override { return ""; }
};

class UnsupportedError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 2; }
  const char* prefix() const override { return ""; }
};

class NumericalError : public Error {
 public:
  using Error::Error;
  const char* prefix() const override { return "numerical failure: "; }
};

// SIGINT / SIGTERM noticed between two pieces of work (core/interrupt.h):
// the job stops at a clean point; exit status 128 + the signal, as a shell
// reports a process the signal killed.
class InterruptedError : public Error {
 public:
  InterruptedError(const std::string& message, int signal_number) : Error(message), signal_(signal_number) {}
  int exit_code() const override { return 128 + signal_; }
  const char* prefix() const override { return "interrupted: "; }
  int signal_number() const { return signal_; }

 private:
  int signal_;
};

// Rethrows the active exception with "context: " prepended, keeping its kind.
[[noreturn]] void rethrow_with_context(const std::string& context);
// Rethrows the active exception with "; note" appended, keeping its kind
// (what the user can do next, e.g. how to resume).
[[noreturn]] void rethrow_with_note(const std::string& note);

namespace detail {
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

}  // namespace gptq

#define GPTQ_CHECK(cond, ...)                                    \
  do {                                                           \
    if (!(cond)) {                                               \
      throw ::gptq::InputError(::gptq::detail::concat(__VA_ARGS__)); \
    }                                                            \
  } while (false)

#define GPTQ_CHECK_SUPPORTED(cond, ...)                                \
  do {                                                                 \
    if (!(cond)) {                                                     \
      throw ::gptq::UnsupportedError(::gptq::detail::concat(__VA_ARGS__)); \
    }                                                                  \
  } while (false)

#define GPTQ_CHECK_NUMERIC(cond, ...)                                    \
  do {                                                                   \
    if (!(cond)) {                                                       \
      throw ::gptq::NumericalError(::gptq::detail::concat(__VA_ARGS__)); \
    }                                                                    \
  } while (false)

#define GPTQ_ASSERT(cond, ...)                                                   \
  do {                                                                           \
    if (!(cond)) {                                                               \
      throw ::gptq::Error(::gptq::detail::concat("internal error at ", __FILE__, \
                                                 ":", __LINE__, ": ", #cond, " ", \
                                                 ##__VA_ARGS__));                \
    }                                                                            \
  } while (false)
