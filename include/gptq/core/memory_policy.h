#pragma once
// The process's allocator policy, set once at start-up.
//
// glibc serves a large allocation with mmap and returns it to the system on
// free, but it raises that threshold to the size of each such block freed (up
// to 32 MiB). After the first block's tensors are freed, every later tensor
// up to that size comes from the heap arenas instead, and freed heap memory
// stays in the process. Measured on a 1.2 GiB bf16 Llama with 12 blocks, this
// made the peak RSS grow block after block: 1.45 GiB, against 1.16 GiB with
// the threshold fixed (docs/benchmarks.md). Pinning the threshold at 1 MiB
// (and trimming above 1 MiB) keeps the memory of a block's tensors going back
// when the block is done, so RSS stays flat in the number of layers. A user's
// MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment wins.
namespace gptq {

void set_memory_policy();

}  // namespace gptq
