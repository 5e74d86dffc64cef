#include "core/plan.h"

#include <algorithm>

namespace arnorm {

ChunkPlan plan_chunks(arnormAlgorithm_t algo, const WorkspaceLayout& layout, size_t count,
                      size_t elem_size) {
  ChunkPlan plan;
  plan.chunk_elems = algo == ARNORM_ALGO_TWOSHOT ? layout.twoshot_chunk_elems(elem_size)
                                                 : layout.oneshot_chunk_elems(elem_size);
  plan.num_chunks = count == 0 || plan.chunk_elems == 0 ? 0 : ceil_div(count, plan.chunk_elems);
  return plan;
}

int plan_blocks(arnormAlgorithm_t algo, size_t n, size_t elem_size, bool vectorized, int world_size,
                int max_blocks) {
  const size_t p = pack_elems(vectorized, elem_size);
  // One-shot: a CTA owns a contiguous range of the chunk. Two-shot: a CTA
  // owns the same sub-range of every shard.
  const size_t packs = algo == ARNORM_ALGO_TWOSHOT ? twoshot_shard_len(n, world_size) / p : ceil_div(n, p);
  const size_t want = ceil_div(packs, static_cast<size_t>(kThreadsPerBlock));
  return static_cast<int>(std::max<size_t>(1, std::min<size_t>(want, static_cast<size_t>(max_blocks))));
}

}  // namespace arnorm
