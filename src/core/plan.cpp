#include "core/plan.h"

#include <algorithm>

namespace arnorm {

ChunkPlan plan_chunks(arnormAlgorithm_t algo, const WorkspaceLayout& layout, size_t count,
                      size_t elem_size, bool ll) {
  ChunkPlan plan;
  if (algo != ARNORM_ALGO_TWOSHOT) {
    plan.chunk_elems = ll ? layout.oneshot_chunk_elems(elem_size) : layout.oneshot_snt_chunk_elems(elem_size);
  } else {
    plan.chunk_elems = ll ? layout.twoshot_ll_chunk_elems(elem_size) : layout.twoshot_chunk_elems(elem_size);
  }
  plan.num_chunks = count == 0 || plan.chunk_elems == 0 ? 0 : ceil_div(count, plan.chunk_elems);
  return plan;
}

int plan_blocks(arnormAlgorithm_t algo, size_t n, size_t elem_size, int world_size, int max_blocks) {
  const size_t p = pack_elems(/*vectorized=*/true, elem_size);
  // One-shot: a CTA owns a contiguous range of the chunk. Two-shot: a CTA
  // owns the same sub-range of every shard.
  const size_t packs = algo == ARNORM_ALGO_TWOSHOT ? twoshot_shard_len(n, world_size) / p : ceil_div(n, p);
  const size_t per_cta = algo == ARNORM_ALGO_TWOSHOT ? kThreadsPerBlock : kOneShotUnitsPerCta;
  const size_t want = ceil_div(packs, per_cta);
  return static_cast<int>(std::max<size_t>(1, std::min<size_t>(want, static_cast<size_t>(max_blocks))));
}

FusedGeometry plan_fused_geometry(arnormAlgorithm_t algo, size_t rows, size_t hidden,
                                  int max_blocks) {
  FusedGeometry g;
  if (rows == 0) return g;
  const size_t want = std::min<size_t>(rows, static_cast<size_t>(max_blocks));
  g.rows_per_cta = ceil_div(rows, want);
  g.blocks = static_cast<int>(ceil_div(rows, g.rows_per_cta));
  if (algo != ARNORM_ALGO_TWOSHOT) {
    // One-shot pushes the rows' elements spread over CTAs, about one
    // 8-element unit per thread, whoever owns the rows (kOneShotUnitsPerCta
    // was measured on the split one-shot only; these rows are rare shapes).
    const size_t push = ceil_div(ceil_div(rows * hidden, size_t{8}), static_cast<size_t>(kThreadsPerBlock));
    g.blocks = static_cast<int>(std::max<size_t>(g.blocks, std::min<size_t>(push, static_cast<size_t>(max_blocks))));
  }
  return g;
}

size_t fused_region_bytes(arnormAlgorithm_t algo, size_t rows, size_t hidden, int world_size, size_t elem_size,
                          bool ll) {
  if (algo == ARNORM_ALGO_TWOSHOT) {
    // Per row: a reduce-scatter slot per peer and the gathered row (world
    // shards), su units each (device/fused_kernels.cuh, fused_twoshot_kernel).
    return rows * (peer_slots(world_size) + static_cast<size_t>(world_size)) *
           fused_shard_units(hidden, elem_size, world_size) * kVectorBytes;
  }
  return static_cast<size_t>(world_size) * align_up(rows * hidden, kElemAlign) * elem_size * (ll ? kLLExpansion : 1);
}

size_t region_capacity(arnormAlgorithm_t algo, const WorkspaceLayout& layout, bool ll) {
  return algo == ARNORM_ALGO_TWOSHOT || !ll ? layout.data_bytes_per_parity : layout.ll_bytes_per_parity;
}

size_t plan_fused_rows_per_chunk(arnormAlgorithm_t algo, const WorkspaceLayout& layout, size_t hidden,
                                 size_t elem_size, bool ll) {
  if (hidden == 0) return 0;
  if (algo != ARNORM_ALGO_TWOSHOT) {
    return (ll ? layout.oneshot_chunk_elems(elem_size) : layout.oneshot_snt_chunk_elems(elem_size)) / hidden;
  }
  return layout.data_bytes_per_parity / fused_region_bytes(algo, 1, hidden, layout.world_size, elem_size, false);
}

size_t plan_fused_ring_slots(size_t rows, const FusedGeometry& g, size_t region_rows, size_t rows_per_step, int lag,
                             size_t max_slots) {
  if (g.blocks <= 0 || g.rows_per_cta == 0) return 0;
  if (rows <= region_rows) return g.rows_per_cta;
  const size_t fit = region_rows / static_cast<size_t>(g.blocks);
  const size_t slots = max_slots > 0 ? std::min(fit, max_slots) : fit;
  const bool deep = slots >= (static_cast<size_t>(std::max(lag, 0)) + 2) * rows_per_step;
  const bool countable = g.rows_per_cta < (size_t{1} << kProgressRowBits);
  return deep && countable ? slots : 0;
}

size_t plan_fused_ring_publish(size_t slots, size_t rows_per_step, int lag, size_t max_rows) {
  const size_t G = std::max<size_t>(rows_per_step, 1), depth = slots / G, l = static_cast<size_t>(std::max(lag, 0));
  const size_t q = depth > l ? (depth - l) * G : G;
  return max_rows > 0 ? std::min(q, std::max(G, max_rows / G * G)) : q;
}

FusedGeometry plan_fused_chunk(arnormAlgorithm_t algo, const WorkspaceLayout& layout, size_t rows, size_t hidden) {
  return plan_fused_geometry(algo, rows, hidden, fused_max_active(layout.max_blocks));
}

int plan_fused_cluster(size_t hidden, int max_blocks) {
  const size_t nv = ceil_div(hidden, size_t{8});
  int c = 1;
  while (c < kMaxFusedCluster && static_cast<size_t>(c) * kThreadsPerBlock < nv) c *= 2;
  while (c > 1 && fused_max_active(max_blocks) < c) c /= 2;
  return nv <= static_cast<size_t>(c) * kRowRegs * kThreadsPerBlock ? c : 0;
}

int plan_fused_split_blocks(size_t rows, size_t hidden, int cluster, int max_blocks) {
  const size_t push = ceil_div(ceil_div(rows * hidden, size_t{8}), static_cast<size_t>(kOneShotUnitsPerCta));
  const size_t want = std::max(push, rows * static_cast<size_t>(cluster));
  // Up to max_blocks: the launcher clips the grid to the clusters resident at
  // once, which for most instances is one CTA per multiprocessor.
  const size_t cap = static_cast<size_t>(max_blocks);
  const size_t blocks = align_down(std::min(want + cluster - 1, cap), static_cast<size_t>(cluster));
  return static_cast<int>(std::max(blocks, static_cast<size_t>(cluster)));
}

FusedRoute plan_fused_route(arnormAlgorithm_t algo, bool may_fall_back, const WorkspaceLayout& layout,
                            int max_blocks, size_t hidden, size_t elem_size, bool oneshot_ll, bool twoshot_ll,
                            bool oneshot_pipelined) {
  FusedRoute r;
  r.algo = algo;
  if (algo == ARNORM_ALGO_ONESHOT && oneshot_pipelined) {
    // The peer's whole row goes where the two-shot gathers a row (2 shards
    // of su units hold it), so the two-shot's region sizes fit.
    r.pipelined = true;
    r.rows_per_chunk = plan_fused_rows_per_chunk(ARNORM_ALGO_TWOSHOT, layout, hidden, elem_size, false);
    return r;
  }
  const int cluster = plan_fused_cluster(hidden, max_blocks);
  const bool oneshot_over_ll = oneshot_ll || cluster == 0 || hidden % 8 != 0;
  if (algo == ARNORM_ALGO_ONESHOT && may_fall_back &&
      plan_fused_rows_per_chunk(algo, layout, hidden, elem_size, oneshot_over_ll) == 0) {
    r.algo = ARNORM_ALGO_TWOSHOT;
  }
  if (r.algo == ARNORM_ALGO_ONESHOT) {
    r.ll = oneshot_over_ll;
    r.cluster = cluster;
    r.rows_per_chunk = plan_fused_rows_per_chunk(r.algo, layout, hidden, elem_size, r.ll);
    return r;
  }
  const size_t ll_rows = hidden ? layout.twoshot_ll_chunk_elems(elem_size) / hidden : 0;
  r.ll = twoshot_ll && cluster > 0 && ll_rows > 0;
  r.cluster = r.ll ? cluster : 0;
  r.rows_per_chunk = r.ll ? ll_rows : plan_fused_rows_per_chunk(r.algo, layout, hidden, elem_size, false);
  return r;
}

}  // namespace arnorm
