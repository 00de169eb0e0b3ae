// Chunked passes over all rows (see row_chunks.h).
#include "model/row_chunks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <utility>

#include "gptq/model/activation_file.h"

namespace gptq::model::detail {

at::Tensor rows(const at::Tensor& t, int64_t start, int64_t count) { return t.narrow(0, start, count); }

void for_spans(int64_t n, int64_t step, const SpanFn& fn) {
  for (int64_t start = 0; start < n; start += step) fn(start, std::min(step, n - start));
}

RowChunks::RowChunks(int64_t rows_per_chunk, std::filesystem::path offload_dir)
    : rows_per_chunk_(rows_per_chunk), offload_dir_(std::move(offload_dir)) {}

at::Tensor RowChunks::all_rows(at::IntArrayRef sizes, const at::TensorOptions& options) const {
  if (offload_dir_.empty()) return at::empty(sizes, options);
  return file_backed_empty(offload_dir_, sizes, options.dtype().toScalarType());
}

void RowChunks::for_chunks(int64_t n_rows, const SpanFn& fn) const {
  for (int64_t start = 0; start < n_rows; start += rows_per_chunk_) {
    fn(start, std::min(rows_per_chunk_, n_rows - start));
    if (!offload_dir_.empty()) write_back_activation_files();
  }
}

at::Tensor RowChunks::map_chunks(int64_t n_rows, const ChunkFn& fn) const {
  at::Tensor out;
  for_chunks(n_rows, [&](int64_t start, int64_t count) {
    at::Tensor part = fn(start, count);
    if (!out.defined()) out = all_rows({n_rows, part.size(1), part.size(2)}, part.options());
    rows(out, start, count).copy_(part);
  });
  return out;
}

}  // namespace gptq::model::detail
