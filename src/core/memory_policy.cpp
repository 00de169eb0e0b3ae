#include "gptq/core/memory_policy.h"

#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace gptq {

void set_memory_policy() {
#if defined(__GLIBC__)
  constexpr int kOneMiB = 1 << 20;
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, kOneMiB);
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) mallopt(M_TRIM_THRESHOLD, kOneMiB);
#endif
}

}  // namespace gptq
