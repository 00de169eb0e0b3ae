#pragma once
// Running a pass over all rows (calibration windows) of a block one chunk at
// a time (private to model/). The observed forward keeps tensors of hidden
// size for all rows and everything wider for one chunk; this is where those
// all-row tensors are made (in RAM, or in files under --offload-activations)
// and where the chunks are walked.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>

namespace gptq::model::detail {

// Rows [start, start + count) of a [B, ...] tensor, as a view.
at::Tensor rows(const at::Tensor& t, int64_t start, int64_t count);

// Called as fn(start, count) for consecutive spans of rows or tokens.
using SpanFn = std::function<void(int64_t start, int64_t count)>;
// The part [count, T, C] of a tensor for rows [start, start + count).
using ChunkFn = std::function<at::Tensor(int64_t start, int64_t count)>;

// fn(start, count) over [0, n) in steps of `step`.
void for_spans(int64_t n, int64_t step, const SpanFn& fn);

class RowChunks {
 public:
  // `offload_dir` empty: all-row tensors in RAM.
  RowChunks(int64_t rows_per_chunk, std::filesystem::path offload_dir);

  int64_t rows_per_chunk() const { return rows_per_chunk_; }
  // An uninitialised tensor for all rows: in RAM, or file-backed.
  at::Tensor all_rows(at::IntArrayRef sizes, const at::TensorOptions& options) const;
  // fn over [0, n_rows) chunk by chunk; when offloading, the files' dirty
  // pages are written back after each chunk (activation_file.h says why).
  void for_chunks(int64_t n_rows, const SpanFn& fn) const;
  // fn's parts written into one [n_rows, T, C] tensor, preallocated rather
  // than concatenated so the parts and the whole never coexist.
  at::Tensor map_chunks(int64_t n_rows, const ChunkFn& fn) const;

 private:
  int64_t rows_per_chunk_;
  std::filesystem::path offload_dir_;
};

}  // namespace gptq::model::detail
