#include "gptq/core/error.h"

#include <exception>
#include <functional>

namespace gptq {
namespace {

// Rethrows the active exception with its message rewritten, keeping its kind.
[[noreturn]] void rethrow_rewritten(const std::function<std::string(const std::string&)>& rewrite) {
  try {
    throw;
  } catch (const InputError& e) {
    throw InputError(rewrite(e.what()));
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(rewrite(e.what()));
  } catch (const InterruptedError& e) {
    throw InterruptedError(rewrite(e.what()), e.signal_number());
  } catch (const NumericalError& e) {
    throw NumericalError(rewrite(e.what()));
  } catch (const Error& e) {
    throw Error(rewrite(e.what()));
  } catch (const std::exception& e) {
    // libtorch's c10::Error messages carry a C++ backtrace; keep the first line.
    std::string message = e.what();
    if (auto eol = message.find('\n'); eol != std::string::npos) message.resize(eol);
    throw Error(rewrite(message));
  }
}

}  // namespace

void rethrow_with_context(const std::string& context) {
  rethrow_rewritten([&](const std::string& message) { return context + ": " + message; });
}

void rethrow_with_note(const std::string& note) {
  rethrow_rewritten([&](const std::string& message) { return message + "; " + note; });
}

}  // namespace gptq
