#include "gptq/core/error.h"

#include <exception>

namespace gptq {

void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const InputError& e) {
    throw InputError(context + ": " + e.what());
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(context + ": " + e.what());
  } catch (const InterruptedError& e) {
    throw InterruptedError(context + ": " + e.what(), e.signal_number());
  } catch (const NumericalError& e) {
    throw NumericalError(context + ": " + e.what());
  } catch (const Error& e) {
    throw Error(context + ": " + e.what());
  } catch (const std::exception& e) {
    // libtorch's c10::Error messages carry a C++ backtrace; keep the first line.
    std::string message = e.what();
    if (auto eol = message.find('\n'); eol != std::string::npos) message.resize(eol);
    throw Error(context + ": " + message);
  }
}

}  // namespace gptq
