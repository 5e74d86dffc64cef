// Kernel bodies of the plain all-reduce. Each is params + body; the only
// launcher is launch_allreduce (launch.cu). Loops over ranks run over
// compile-time indices (r < kMaxRanks, guarded by r < world) so per-rank
// pointers stay in registers.
#pragma once

#include "core/plan.h"
#include "device/pack.cuh"
#include "device/sync.cuh"

namespace arnorm {

// Loads the P-element pack of every rank's contribution: the caller's
// buffer for this rank, workspace slots for peers; all loads are issued
// before any is used.
template <typename T, int P>
__device__ __forceinline__ void gather_contributions(const T* const* slot, int me, int world, const T* own,
                                                     size_t own_pack, size_t own_n, size_t slot_pack,
                                                     Pack<T, P>* v) {
#pragma unroll
  for (int r = 0; r < kMaxRanks; ++r) {
    if (r < world) v[r] = r == me ? load_bounded<T, P>(own, own_pack, own_n) : load_cg<T, P>(slot[r], slot_pack);
  }
}

// Runs body(i) for packs i in [lo + threadIdx.x, hi) stepping blockDim.x,
// U packs per thread at a time: `load(i)` for all U first, then `use(i, v)`,
// so U independent loads per thread are in flight.
template <int U, typename V, typename Load, typename Use>
__device__ __forceinline__ void for_packs(size_t lo, size_t hi, Load load, Use use) {
  for (size_t base = lo + threadIdx.x; base < hi; base += U * blockDim.x) {
    V v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t i = base + u * blockDim.x;
      if (i < hi) v[u] = load(i);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t i = base + u * blockDim.x;
      if (i < hi) use(i, v[u]);
    }
  }
}

// Packs per thread in flight in the copy loops and the reduce loops.
constexpr int kCopyUnroll = 4;
constexpr int kReduceUnroll = 2;

// Slot `slot_index` (of `slot_elems` elements) in every rank's data region
// of parity `e`, as mapped here.
template <typename T>
__device__ __forceinline__ void slots_at(const SyncParams& s, uint64_t e, size_t slot_index, size_t slot_elems,
                                         T** out) {
  const size_t offset = s.layout.data_parity_offset(e) + slot_index * slot_elems * sizeof(T);
#pragma unroll
  for (int r = 0; r < kMaxRanks; ++r) out[r] = r < s.world ? reinterpret_cast<T*>(s.ws[r] + offset) : nullptr;
}

// ONE-SHOT. CTA b owns packs [lo, hi) of the chunk. It pushes them into slot
// [me] of every peer's data region, signals, waits for the same CTA of every
// peer, and sums all ranks' packs in rank order into the output.
// In place is safe: a thread reads in[i] before it writes out[i], and no
// other thread or rank reads in[i] after this CTA's push.
template <typename T, int P>
__global__ void __launch_bounds__(kThreadsPerBlock, 2) allreduce_oneshot_kernel(AllReduceParams p) {
  const SyncParams& s = p.sync;
  const CallStart call = op_begin(s);
  const uint64_t e = call.e;
  const int me = s.rank, world = s.world;
  const T* in = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  const size_t n = p.count;
  if (blockIdx.x >= s.active_blocks) return op_end(s, e);
  // The CTA's element range is cut in 16-byte units whatever P is: ranks may
  // differ in alignment (and so in P), never in who handles which element.
  constexpr size_t kUnit = kVectorBytes / sizeof(T);
  const size_t per_cta = ceil_div(ceil_div(n, kUnit), static_cast<size_t>(s.active_blocks)) * kUnit;
  const size_t lo_e = min(n, blockIdx.x * per_cta), hi_e = min(n, lo_e + per_cta);
  const size_t lo = ceil_div(lo_e, static_cast<size_t>(P)), hi = ceil_div(hi_e, static_cast<size_t>(P));
  const size_t slot_elems = s.layout.oneshot_chunk_elems(sizeof(T));

  bool ok = false;
  if (!call.aborted) {
    T* my_slot_on[kMaxRanks];  // slot [me] on rank r: where this rank's data goes
    slots_at<T>(s, e, me, slot_elems, my_slot_on);
    for_packs<kCopyUnroll, Pack<T, P>>(
        lo, hi, [&](size_t i) { return load_bounded<T, P>(in, i, n); },
        [&](size_t i, const Pack<T, P>& v) {
#pragma unroll
          for (int r = 0; r < kMaxRanks; ++r)
            if (r < world && r != me) store_slot<T, P>(my_slot_on[r], i, v);
        });
    ok = signal_and_wait(s, 0, e);
  }

  // Local slot [r] holds rank r's data.
  const T* src[kMaxRanks];
  char* local = workspace_of(s, me) + s.layout.data_parity_offset(e);
#pragma unroll
  for (int r = 0; r < kMaxRanks; ++r) src[r] = reinterpret_cast<const T*>(local) + r * slot_elems;
  for_packs<kReduceUnroll, Pack<T, P>>(
      lo, hi,
      [&](size_t i) {
        if (!ok) return nan_pack<T, P>();
        Pack<T, P> v[kMaxRanks];
        gather_contributions<T, P>(src, me, world, in, i, n, i, v);
        return sum_in_rank_order<T, P>(v, world);
      },
      [&](size_t i, const Pack<T, P>& result) { store_bounded<T, P>(out, i, n, result); });
  op_end(s, e);
}

// TWO-SHOT. The chunk is cut into `world` shards of shard_len elements; CTA b
// owns packs [lo, hi) of every shard. Rank q's data region holds reduce-
// scatter slots RS[src] (slots 0..world-1) and all-gather slots AG[src]
// (slots world..2*world-1), each of one shard's capacity.
//   1. reduce-scatter push: rank j's shard goes to RS[me] on rank j;
//   2. sync point 0; sum own shard in rank order, write it to the output and
//      push it to AG[me] on every peer;
//   3. sync point 1; copy every peer's reduced shard from the local AG slots.
// In place is safe: every element this CTA reads from `in` it reads before it
// writes that element of `out`, and other CTAs touch disjoint packs.
template <typename T, int P>
__global__ void __launch_bounds__(kThreadsPerBlock, 2) allreduce_twoshot_kernel(AllReduceParams p) {
  const SyncParams& s = p.sync;
  const CallStart call = op_begin(s);
  const uint64_t e = call.e;
  const int me = s.rank, world = s.world;
  const T* in = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  const size_t n = p.count;
  if (blockIdx.x >= s.active_blocks) return op_end(s, e);
  const size_t shard_len = twoshot_shard_len(n, world);  // a multiple of kElemAlign
  const size_t spp = shard_len / P;                       // packs per shard
  // Sub-ranges cut in 16-byte units whatever P is (see the one-shot kernel).
  constexpr size_t kUnit = kVectorBytes / sizeof(T);
  const size_t per_cta = ceil_div(shard_len / kUnit, static_cast<size_t>(s.active_blocks)) * kUnit;
  const size_t lo_e = min(shard_len, blockIdx.x * per_cta), hi_e = min(shard_len, lo_e + per_cta);
  const size_t lo = lo_e / P, hi = hi_e / P;
  const size_t npacks = ceil_div(n, static_cast<size_t>(P));
  const size_t cap = s.layout.twoshot_shard_capacity(sizeof(T));

  bool ok = false;
  if (!call.aborted) {
    T* rs_me_on[kMaxRanks];
    slots_at<T>(s, e, me, cap, rs_me_on);
#pragma unroll
    for (int r = 0; r < kMaxRanks; ++r) {
      if (r >= world || r == me) continue;
      const size_t end = min(hi, npacks > r * spp ? npacks - r * spp : 0);
      for_packs<kCopyUnroll, Pack<T, P>>(
          lo, end, [&](size_t i) { return load_bounded<T, P>(in, r * spp + i, n); },
          [&](size_t i, const Pack<T, P>& v) { store_slot<T, P>(rs_me_on[r], i, v); });
    }
    ok = signal_and_wait(s, 0, e);
  }

  char* local = workspace_of(s, me) + s.layout.data_parity_offset(e);
  if (ok) {
    const T* rs[kMaxRanks];
    T* ag_me_on[kMaxRanks];
#pragma unroll
    for (int r = 0; r < kMaxRanks; ++r) rs[r] = reinterpret_cast<const T*>(local) + r * cap;
    slots_at<T>(s, e, world + me, cap, ag_me_on);
    const size_t end = min(hi, npacks > me * spp ? npacks - me * spp : 0);
    for_packs<kReduceUnroll, Pack<T, P>>(
        lo, end,
        [&](size_t i) {
          Pack<T, P> v[kMaxRanks];
          gather_contributions<T, P>(rs, me, world, in, me * spp + i, n, i, v);
          return sum_in_rank_order<T, P>(v, world);
        },
        [&](size_t i, const Pack<T, P>& result) {
          store_bounded<T, P>(out, me * spp + i, n, result);
#pragma unroll
          for (int r = 0; r < kMaxRanks; ++r)
            if (r < world && r != me) store_slot<T, P>(ag_me_on[r], i, result);
        });
    ok = signal_and_wait(s, 1, e);
  }

#pragma unroll
  for (int r = 0; r < kMaxRanks; ++r) {
    if (r >= world || (ok && r == me)) continue;
    const T* ag = reinterpret_cast<const T*>(local) + (world + r) * cap;
    const size_t end = min(hi, npacks > r * spp ? npacks - r * spp : 0);
    for_packs<kCopyUnroll, Pack<T, P>>(
        lo, end, [&](size_t i) { return ok ? load_cg<T, P>(ag, i) : nan_pack<T, P>(); },
        [&](size_t i, const Pack<T, P>& v) { store_bounded<T, P>(out, r * spp + i, n, v); });
  }
  op_end(s, e);
}

}  // namespace arnorm
