// Launch planning for one call: how a message is cut into chunks that fit
// the workspace and how many CTAs each chunk's kernel uses. Pure arithmetic
// on values every rank shares (layout, count, dtype, agreed max_blocks), so
// every rank launches the same grid sequence. Compiles for host and device.
#pragma once

#include <cstddef>

#include "arnorm/arnorm.h"
#include "core/workspace_layout.h"

namespace arnorm {

// Threads per CTA of every data-moving kernel but the fused two-shot; every
// row epilogue runs on this many threads.
constexpr int kThreadsPerBlock = 256;
// The fused two-shot over sentinel units adds this many mover threads (push
// and reduce) to the kThreadsPerBlock epilogue threads of each CTA.
constexpr int kFusedMoverThreads = 128;
constexpr int kFusedTwoShotThreads = kThreadsPerBlock + kFusedMoverThreads;
// One-shot CTAs push about this many 16-byte units each (half a CTA's
// threads), so that a call spreads its NVLink stores over twice the
// multiprocessors (4x H200: 512 KB 9.36 -> 8.88 us, 1 x 7168 fused 5.60 ->
// 5.45).
constexpr int kOneShotUnitsPerCta = 128;
// Virtual packs (8 elements) per thread a fused epilogue keeps in registers.
constexpr int kRowRegs = 4;
// Largest thread-block cluster the split fused epilogue uses (portable size).
constexpr int kMaxFusedCluster = 8;
// Threads of a WIDE one-shot CTA (fused_oneshot_wide_kernel): a row of up to
// two CTAs' virtual packs, one a thread, in one CTA instead of a cluster.
constexpr int kWideThreads = 2 * kThreadsPerBlock;
constexpr size_t kVectorBytes = 16;

// Rank capacity of the kernel instance that serves a world size: kernels are
// built for 2, 4 and kMaxRanks ranks (loops and per-rank arrays of exactly
// that size, ranks past the world skipped), because code size and registers
// set the latency of small calls. Local to the rank (it changes no result
// bit and pairs nothing across ranks).
static_assert(kMaxRanks >= 4, "rank capacities 2, 4 and kMaxRanks");
ARNORM_HD inline int rank_capacity(int world_size) { return world_size <= 2 ? 2 : world_size <= 4 ? 4 : kMaxRanks; }

struct ChunkPlan {
  size_t chunk_elems = 0;  // elements per chunk (the last may be shorter)
  size_t num_chunks = 0;
};

// Elements each kernel packs together: 16 bytes when every caller pointer is
// 16-byte aligned, else one element.
ARNORM_HD inline size_t pack_elems(bool vectorized, size_t elem_size) {
  return vectorized ? kVectorBytes / elem_size : 1;
}

// `ll`: over LL words (else sentinel units), for either algorithm.
ChunkPlan plan_chunks(arnormAlgorithm_t algo, const WorkspaceLayout& layout, size_t count,
                      size_t elem_size, bool ll);

// CTAs carrying data for one chunk of n elements. It depends on nothing
// local (not on pointer alignment): the kernels cut their ranges in 16-byte
// units on every rank, whichever access width each rank can use.
int plan_blocks(arnormAlgorithm_t algo, size_t n, size_t elem_size, int world_size, int max_blocks);

// Fused op: CTAs own whole rows. For a chunk of `rows` rows:
struct FusedGeometry {
  int blocks = 0;
  size_t rows_per_cta = 0;
};

// Fused two-shot (sentinel protocol): a row is ceil(hidden * elem_size / 16)
// 16-byte units; rank j owns units [j * su, (j + 1) * su) of every row, su
// = fused_shard_units, a whole number of 128-byte lines. Shared by the
// planner and the kernel.
constexpr size_t kFusedShardAlignUnits = 8;
ARNORM_HD inline size_t fused_row_units(size_t hidden, size_t elem_size) {
  return ceil_div(hidden * elem_size, kVectorBytes);
}
// Rows a CTA of the fused two-shot moves per pipeline step: about
// kFusedStepUnits units (16 KiB), at most 8 rows, and two rows where two fit
// in kFusedStepMaxUnits (32 KiB), else one. A step is what the pipeline fills
// and drains with, so smaller is better until a step is one row (4x H200,
// bf16, 1024 / 8192 tokens: 4096-wide rows 2 per step 63.4 / 458 us against
// 4 per step 67.7 / 485; 7168-wide rows 1 per step 101.8 / 788 against 2 per
// step 90.5 / 725).
constexpr size_t kFusedStepUnits = 1024;
constexpr size_t kFusedStepMaxUnits = 2048;
ARNORM_HD inline size_t fused_rows_per_step(size_t hidden, size_t elem_size) {
  const size_t ru = fused_row_units(hidden, elem_size);
  const size_t g = kFusedStepUnits / ru;
  return g > 8 ? 8 : g >= 2 ? g : 2 * ru <= kFusedStepMaxUnits ? 2 : 1;
}
// Rows the fused two-shot's epilogue takes at once (ROW GROUPS,
// device/rmsnorm_epilogue.cuh): two where a row fits one round of half the
// epilogue threads (hidden <= 4096 at 8 elements a pack) and the movers'
// steps hold an even number of rows, else one. Either gives the same bits.
ARNORM_HD inline int fused_epilogue_groups(size_t hidden, size_t elem_size) {
  const size_t nv = ceil_div(hidden, size_t{8});  // virtual packs of 8 elements (kRowVec)
  const bool fits = nv <= static_cast<size_t>(kRowRegs) * (kThreadsPerBlock / 2);
  return fits && fused_rows_per_step(hidden, elem_size) % 2 == 0 ? 2 : 1;
}
ARNORM_HD inline size_t fused_shard_units(size_t hidden, size_t elem_size, int world_size) {
  return align_up(ceil_div(fused_row_units(hidden, elem_size), static_cast<size_t>(world_size)),
                  kFusedShardAlignUnits);
}

FusedGeometry plan_fused_geometry(arnormAlgorithm_t algo, size_t rows, size_t hidden,
                                  int max_blocks);

// Bytes of one parity's region the chunk needs: the data region for
// two-shot (sentinel units) and for one-shot over sentinel units, the LL
// region (LL words: twice the data) for one-shot over LL (`ll`).
size_t fused_region_bytes(arnormAlgorithm_t algo, size_t rows, size_t hidden, int world_size, size_t elem_size,
                          bool ll);

// Bytes of one parity's region that algorithm and protocol may use.
size_t region_capacity(arnormAlgorithm_t algo, const WorkspaceLayout& layout, bool ll);

// The fused kernels keep a row in registers and most run one CTA per
// multiprocessor: of max_blocks (two per multiprocessor), they launch at
// most this many (the split one-shot's grid is clipped to what is resident
// instead: plan_fused_split_blocks).
inline int fused_max_active(int max_blocks) { return max_blocks > 1 ? max_blocks / 2 : 1; }

// One-shot fused, rows split over a thread-block cluster: the cluster size
// for rows of `hidden` elements, a power of two (the smallest with one
// virtual pack per thread, at most kMaxFusedCluster and fused_max_active), or
// 0 when a row does not fit kRowRegs packs per thread of that many CTAs (the
// one-CTA-per-row kernel then serves it). A function of hidden and the
// agreed max_blocks only, so a row's result never depends on its batch.
int plan_fused_cluster(size_t hidden, int max_blocks);

// Virtual packs per thread the split epilogue keeps for rows of `hidden`
// elements over clusters of `cluster` CTAs: 1 where one pack per thread
// covers the row (hidden <= 2048 * cluster), else kRowRegs. Which kernel
// instance runs, never a result bit.
ARNORM_HD inline int split_packs(size_t hidden, int cluster) {
  return ceil_div(hidden, size_t{8}) <= static_cast<size_t>(cluster) * kThreadsPerBlock ? 1 : kRowRegs;
}

// Whether a split one-shot runs as WIDE CTAs instead: rows that a cluster of
// two takes with one virtual pack a thread (kWideThreads then hold the row,
// one pack each) on the vector path, at most 4 ranks (the 8-rank instances
// would spill at the 128 registers of a 512-thread CTA; ptxas). Local to a
// rank: neither the data moved nor a result bit depends on it.
ARNORM_HD inline bool fused_wide(int cluster, size_t hidden, bool vectorized, int world_size) {
  return vectorized && world_size <= 4 && cluster == 2 && split_packs(hidden, cluster) == 1;
}

// CTAs carrying data for a split one-shot chunk of `rows` rows: enough to
// push about kOneShotUnitsPerCta 16-byte units each and to give each row a cluster, at
// most max_blocks (the launcher clips to what is resident), a multiple of
// the cluster size.
int plan_fused_split_blocks(size_t rows, size_t hidden, int cluster, int max_blocks);

// How a fused call on peer memory runs, decided from values every rank
// shares (algorithm, layout, agreed max_blocks, hidden, element size, and
// the protocol the call's bytes take). Every route gives a row the same bits.
struct FusedRoute {
  arnormAlgorithm_t algo = ARNORM_ALGO_AUTO;  // ONESHOT or TWOSHOT
  bool ll = false;          // over LL words, else sentinel units
  int cluster = 0;          // CTAs per row (split epilogue); 0: CTAs own whole rows
  // ONESHOT over the two-shot's pipeline (2 ranks, fused_oneshot_pipelined):
  // the two-shot's geometry, row slots and ring, a whole row per slot.
  bool pipelined = false;
  size_t rows_per_chunk = 0;  // 0: one row does not fit the workspace
};

// `algo` is the resolved algorithm; `may_fall_back` (the caller asked for
// AUTO) lets a one-shot whose row does not fit its region take two-shot;
// `oneshot_ll` and `twoshot_ll` are the protocol choices for the call's
// bytes (selection.h). The one-shot over sentinel units needs the split
// epilogue and whole units per virtual pack (hidden % 8 == 0: each unit is
// polled and cleared by the one thread that owns its pack); other one-shot
// rows go over LL. `oneshot_pipelined` (fused_oneshot_pipelined, 2 ranks):
// the one-shot takes the two-shot's pipeline instead, any hidden size.
FusedRoute plan_fused_route(arnormAlgorithm_t algo, bool may_fall_back, const WorkspaceLayout& layout,
                            int max_blocks, size_t hidden, size_t elem_size, bool oneshot_ll, bool twoshot_ll,
                            bool oneshot_pipelined = false);

// Fused two-shot over sentinel units, a call of `rows` rows on g.blocks CTAs
// of g.rows_per_cta rows, the region holding `region_rows` rows: row slots
// per CTA (FusedParams::ring_slots). Rows that fit take a slot each (returns
// g.rows_per_cta); more rows take a ring of region_rows / g.blocks slots per
// CTA (RING PROGRESS, device/sync.cuh), so the whole call is one kernel with
// one pipeline fill, if the ring holds at least (lag + 2) steps: then a wait
// for a slot only ever waits on steps its waiter finished earlier. 0: the
// call is cut into chunks instead. Every world size takes the ring (run on
// GPUs at 2 and 4 ranks; the host model, tests/host/ring_model_test.cpp,
// covers 2 to 8). max_slots > 0 caps the ring's slots per CTA below what
// the region holds (ARNORM_FUSED_RING_SLOTS, agreed at creation: writers and
// readers compute slots alike), a measurement knob; a cap below (lag + 2)
// steps cuts the call into chunks.
size_t plan_fused_ring_slots(size_t rows, const FusedGeometry& g, size_t region_rows, size_t rows_per_step, int lag,
                             size_t max_slots = 0);
// Rows between RING PROGRESS publications for a ring of `slots` slots
// (FusedParams::ring_publish): the largest multiple Q of rows_per_step with
// slots >= lag * rows_per_step + Q. That bound keeps every wait on work of
// earlier iterations (a published count trails the truth by less than Q);
// the largest Q, because each publication's fence waits for the group's
// pushes in flight (about 2 us): on 2x H200 publishing every step cost 13%
// at 8192 x 4096 and the largest Q was fastest at every width measured.
// max_rows > 0 publishes at least every max_rows rows (rounded down to whole
// steps, at least one; ARNORM_FUSED_RING_PUBLISH, a measurement knob): a
// smaller Q only loosens the bound.
size_t plan_fused_ring_publish(size_t slots, size_t rows_per_step, int lag, size_t max_rows = 0);
// Geometry for a chunk of `rows` <= rows_per_chunk rows (the region a chunk
// needs grows with its rows only, so every shorter chunk fits too).
FusedGeometry plan_fused_chunk(arnormAlgorithm_t algo, const WorkspaceLayout& layout, size_t rows, size_t hidden);

// Most rows per chunk that fit the region of that algorithm and protocol
// (0: not even one row). Two-shot: the sentinel kernel's (its LL rows are
// layout.twoshot_ll_chunk_elems / hidden).
size_t plan_fused_rows_per_chunk(arnormAlgorithm_t algo, const WorkspaceLayout& layout, size_t hidden,
                                 size_t elem_size, bool ll);

}  // namespace arnorm
