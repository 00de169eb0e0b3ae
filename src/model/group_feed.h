#pragma once
// The observer's side of the observed forward (private to model/): feeding a
// site's groups their input chunk by chunk and finishing them before their
// linears run, per GroupObserver's contract (group_observer.h).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "gptq/model/group_observer.h"
#include "model/block.h"
#include "model/row_chunks.h"

namespace gptq::model::detail {

// Feeds every group reading `site` (every token: a dense layer's groups) the
// chunks input(start, count) in row order, then finishes those groups;
// nothing when no group reads `site`.
void observe_site(const Block& block, const RowChunks& chunks, InputSite site, GroupObserver& observer,
                  int64_t n_rows, const ChunkFn& input);

// finish_group for each of `group_indices` in order, the routed experts'
// groups among them together after the others (finish_independent_groups);
// InputError when the observer replaced a weight with one of another shape.
void finish_groups(const Block& block, const std::vector<int>& group_indices, GroupObserver& observer);

}  // namespace gptq::model::detail
