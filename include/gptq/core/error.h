#pragma once
// gptq::Error and its kinds: the one exception family the project throws.
//
// InputError        bad file, config, flag or tensor shape from the user (exit 2)
// UnsupportedError  an architecture, dtype or format we do not handle (exit 2)
// NumericalError    a computation that failed on valid input, e.g. a Cholesky
//                   still failing after every damping retry (exit 1)
//
// GPTQ_CHECK(cond, parts...) throws InputError for user input; GPTQ_ASSERT is for
// our own invariants (a failure is a bug). Callers add context on the way up
// with Error::with_context("model.layers.3.mlp.down_proj").
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
};

class InputError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 2; }
};

class UnsupportedError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 2; }
};

class NumericalError : public Error {
 public:
  using Error::Error;
};

// Rethrows the active exception with "context: " prepended, keeping its kind.
[[noreturn]] void rethrow_with_context(const std::string& context);

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

#define GPTQ_ASSERT(cond, ...)                                                   \
  do {                                                                           \
    if (!(cond)) {                                                               \
      throw ::gptq::Error(::gptq::detail::concat("internal error at ", __FILE__, \
                                                 ":", __LINE__, ": ", #cond, " ", \
                                                 ##__VA_ARGS__));                \
    }                                                                            \
  } while (false)
