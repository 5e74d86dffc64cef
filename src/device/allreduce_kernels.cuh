// Kernel bodies of the plain all-reduce. Each is params + body; the only
// launcher is launch_allreduce (launch.cu). Loops over ranks run over
// compile-time indices (r < R, guarded by r < world) so per-rank pointers
// stay in registers. R, the rank capacity, is a template argument (2, 4 or
// 8: rank_capacity in core/plan.h): code and registers for exactly that many
// ranks, since a kernel's size and register use set its latency at small
// sizes.
#pragma once

#include "core/plan.h"
#include "device/ll.cuh"
#include "device/pack.cuh"
#include "device/phase_clock.cuh"
#include "device/sentinel.cuh"
#include "device/sync.cuh"

namespace arnorm {

// The 16-byte units [lo, hi) of a flat range of n elements that this CTA
// owns: the range cut over the grid in whole runs of 32 units (LL groups,
// sentinel runs), the same on every rank whatever its alignment. `first` is
// this thread's first unit (lo + threadIdx.x), loaded here so that callers,
// which call this before op_begin, overlap its latency with the epoch read.
static_assert(kLLGroupUnits == kSntRunUnits, "unit ranges serve both protocols");
struct UnitRange {
  size_t units, lo, hi;
  uint4 first;
};
template <typename T, bool kVec>
__device__ __forceinline__ UnitRange cta_units(const T* in, size_t n) {
  UnitRange r;
  r.units = ceil_div(n, kUnitBytes / sizeof(T));
  const size_t per_cta = ll_span(r.units, gridDim.x);
  r.lo = min(r.units, blockIdx.x * per_cta);
  r.hi = min(r.units, r.lo + per_cta);
  r.first = r.lo + threadIdx.x < r.hi ? load_unit<T, kVec>(in, r.lo + threadIdx.x, n) : uint4{};
  return r;
}

// ONE-SHOT over LL, the start shared by the plain and the fused one-shot:
// this CTA's units go into slot [me] of every peer's LL region (unless an
// earlier wait aborted), and src[r] points at local slot [r], which holds
// rank r's data once its words carry this call's epoch.
template <typename T, bool kVec, int R>
__device__ __forceinline__ void ll_oneshot_begin(const SyncParams& s, const CallStart& call, const T* in, size_t n,
                                                 const UnitRange& ur, const uint64_t* (&src)[R]) {
  const size_t slot_bytes = s.layout.oneshot_slot_bytes(sizeof(T));
  if (!call.aborted) ll_push<T, kVec, R>(s, call.e, slot_bytes, in, n, ur.lo, ur.hi, ur.first);
#pragma unroll
  for (int r = 0; r < R; ++r) src[r] = r < s.world ? ll_slot<R>(s, s.rank, r, call.e, slot_bytes) : nullptr;
}

// Stores the units of `r` of `in` (n elements) into slot [me] (`cap` units
// long) of every peer's data region of parity e, as sentinel units.
template <typename T, bool kVec, int R>
__device__ __forceinline__ void snt_push(const SyncParams& s, uint64_t e, size_t cap, const T* in, size_t n,
                                         const UnitRange& r) {
  const size_t parity = s.layout.data_parity_offset(e);
  // Rank q's data region (q compile-time: the base stays a kernel parameter).
  auto push = [&](size_t u, const uint4& d) {
#pragma unroll
    for (int q = 0; q < R; ++q)
      if (q < s.world && q != s.rank) snt_store<T>(reinterpret_cast<uint4*>(s.ws[q] + parity) + s.rank * cap + u, d);
  };
  if (r.lo + threadIdx.x < r.hi) push(r.lo + threadIdx.x, r.first);
  for_packs<kCopyUnroll, uint4>(
      r.lo + blockDim.x, r.hi, [&](size_t u) { return load_unit<T, kVec>(in, u, n); }, push);
}

// Polls unit u of every peer's slot src[r] (ll_poll) and stores in *sum the
// rank-order sum with this rank's own value `own`; false (and NaN) if a unit
// never arrived. Shared by the one-shot sum and the two-shot reduce-scatter.
template <typename T, int R>
__device__ __forceinline__ bool ll_sum_unit(const uint64_t* const* src, size_t u, const uint4& own, int me,
                                            int world, const PollWait& wait, uint4* sum) {
  constexpr int K = static_cast<int>(kLLUnitBytes / sizeof(T));
  const uint64_t* at[R];
  bool live[R];
  int peer[R];
  LLRaw raw[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    live[r] = r < world && r != me;
    at[r] = live[r] ? ll_at(src[r], u) : nullptr;
    peer[r] = r;
  }
  const bool ok = ll_poll(at, live, peer, wait, raw);
  Pack<T, K> v[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= world) continue;
    const uint4 d = r == me ? own : ll_data(raw[r]);
    v[r] = *reinterpret_cast<const Pack<T, K>*>(&d);
  }
  const Pack<T, K> r = ok ? sum_in_rank_order<T, K, R>(v, world) : nan_pack<T, K>();
  *sum = *reinterpret_cast<const uint4*>(&r);
  return ok;
}

// The same over sentinel units (sentinel.cuh): peer r's unit is
// slot_of(r)[i] in the local region; every unit is cleared once it has been
// read.
template <typename T, int R, typename SlotOf>
__device__ __forceinline__ bool snt_sum_unit(SlotOf slot_of, size_t i, const uint4& own, int me, int world,
                                             const PollWait& wait, uint4* sum) {
  constexpr int K = static_cast<int>(kSntUnitBytes / sizeof(T));
  const uint4* at[R];
  bool live[R];
  int peer[R];
  uint4 d[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    live[r] = r < world && r != me;
    at[r] = live[r] ? slot_of(r) + i : nullptr;
    peer[r] = r;
  }
  const bool ok = snt_poll<T>(at, live, peer, wait, d);
  Pack<T, K> v[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= world) continue;
    v[r] = *reinterpret_cast<const Pack<T, K>*>(r == me ? &own : &d[r]);
    if (ok && live[r]) snt_clear(slot_of(r) + i);
  }
  const Pack<T, K> r = ok ? sum_in_rank_order<T, K, R>(v, world) : nan_pack<T, K>();
  *sum = *reinterpret_cast<const uint4*>(&r);
  return ok;
}

// ONE-SHOT. CTA b owns units [lo, hi) (16 data bytes each) of the chunk. It
// pushes them into slot [me] of every peer's region, then polls the same
// units of every peer's slot in its own region and sums all ranks' values in
// rank order (this rank's from its input) into the output. No signal, no
// fence, no CTA pairing. Two protocols (selection.h, oneshot_uses_ll):
//   kLL: LL words (ll.cuh) in the LL region; each word carries the epoch.
//   sentinel units (sentinel.cuh) in the data region, above the LL sizes:
//     LL words carry half data, so from some size on moving twice the bytes
//     costs more than polling plain data and clearing it; each unit pushed
//     here is read and cleared by the one thread of this rank that owns its
//     index (CLEAN REGIONS).
// In place is safe: the thread that handles unit u reads in[u] (push, then
// sum) before it writes out[u], and no other thread or rank reads in[u].
template <typename T, bool kVec, int R, bool kLL>
__global__ void __launch_bounds__(kThreadsPerBlock, 2) allreduce_oneshot_kernel(AllReduceParams p) {
  pdl_begin();
  const long long t0 = PhaseClock::now();  // (mark 0: before the loads, as before op_read)
  const CallRead read = op_read(p.sync);    // EPOCH: issued first, completed by op_begin
  constexpr int K = static_cast<int>(kLLUnitBytes / sizeof(T));
  const SyncParams& s = p.sync;
  const int me = s.rank, world = s.world;
  const T* in = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  const size_t n = p.count;
  const UnitRange ur = cta_units<T, kVec>(in, n);
  const CallStart call = op_begin(read);
  const uint64_t e = call.e;
  const PhaseClock clock(s, e, t0);
  clock.mark(1);
  // After an abort every poll gives up at once and the output is NaN.
  const PollWait wait = poll_wait_of(s, call);
  auto sum_and_store = [&](auto sum_unit) {
    for (size_t u = ur.lo + threadIdx.x; u < ur.hi; u += blockDim.x) {
      const uint4 own = u == ur.lo + threadIdx.x ? ur.first : load_unit<T, kVec>(in, u, n);
      uint4 sum;
      sum_unit(u, own, &sum);
      store_unit<T, kVec>(out, u, n, sum);
    }
  };
  if constexpr (kLL) {
    const uint64_t* src[R];
    ll_oneshot_begin<T, kVec, R>(s, call, in, n, ur, src);
    clock.mark(2);
    sum_and_store([&](size_t u, const uint4& own, uint4* sum) { ll_sum_unit<T, R>(src, u, own, me, world, wait, sum); });
  } else {
    const size_t cap = s.layout.oneshot_snt_chunk_elems(sizeof(T)) / K;  // units per slot
    if (!call.aborted) snt_push<T, kVec, R>(s, e, cap, in, n, ur);
    clock.mark(2);
    uint4* local = snt_region<R>(s, me, e);
    auto slot_of = [&](int r) { return local + r * cap; };
    sum_and_store([&](size_t u, const uint4& own, uint4* sum) { snt_sum_unit<T, R>(slot_of, u, own, me, world, wait, sum); });
  }
  clock.mark(3);
  op_end(s, e);
  clock.mark(4);
}

// TWO-SHOT over LL. The chunk is cut into `world` shards of shard_len
// elements (twoshot_shard_len); CTA b owns units [lo, hi) of every shard.
// Rank q's LL region holds RS[src] (slots 0..world-1) and AG[src] (slots
// world..2*world-1).
//   1. push unit u of shard j to RS[me] on rank j;
//   2. poll RS[r] for every peer, sum own shard in rank order, write it to
//      the output and push it to AG[me] on every peer;
//   3. poll AG[r] for every peer, copy its reduced shard to the output.
// Each CTA waits only for units the same-index CTA of a peer pushes (same
// geometry on every rank). In place is safe: a unit of `in` is read (steps
// 1 and 2) by the thread that later writes it, before it writes it.
template <typename T, bool kVec, int R>
__global__ void __launch_bounds__(kThreadsPerBlock, 2) allreduce_twoshot_ll_kernel(AllReduceParams p) {
  pdl_begin();
  const CallRead read = op_read(p.sync);  // EPOCH: issued first, completed by op_begin
  constexpr int K = static_cast<int>(kLLUnitBytes / sizeof(T));
  const SyncParams& s = p.sync;
  const int me = s.rank, world = s.world;
  const T* in = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  const size_t n = p.count;
  const size_t shard_len = twoshot_shard_len(n, world);  // a multiple of kElemAlign, so of K
  const size_t su = shard_len / K;                        // units per shard
  const size_t per_cta = ll_span(su, gridDim.x);
  const size_t lo = min(su, blockIdx.x * per_cta), hi = min(su, lo + per_cta);
  // This rank's view of shard j: elements [j * shard_len, n).
  auto shard_in = [&](int j) { return in + j * shard_len; };
  auto shard_n = [&](int j) { return n > j * shard_len ? n - j * shard_len : size_t{0}; };
  const CallStart call = op_begin(read);
  const uint64_t e = call.e;
  const uint32_t flag = ll_flag(e);
  const size_t slot_bytes = s.layout.twoshot_ll_slot_bytes(sizeof(T));
  const PollWait wait = poll_wait_of(s, call);

  // 1. reduce-scatter push
  if (!call.aborted) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= world || r == me) continue;
      uint64_t* rs_me_on_r = ll_slot<R>(s, r, me, e, slot_bytes);
      for_packs<kCopyUnroll, uint4>(
          lo, hi, [&](size_t u) { return load_unit<T, kVec>(shard_in(r), u, shard_n(r)); },
          [&](size_t u, const uint4& d) { ll_store_unit(rs_me_on_r, u, d, flag); });
    }
  }

  // 2. reduce own shard, write it, push it to every peer's AG[me]
  const uint64_t* rs[R];
  uint64_t* ag_me_on[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    rs[r] = r < world ? ll_slot<R>(s, me, r, e, slot_bytes) : nullptr;
    ag_me_on[r] = r < world ? ll_slot<R>(s, r, world + me, e, slot_bytes) : nullptr;
  }
  for (size_t u = lo + threadIdx.x; u < hi; u += blockDim.x) {
    uint4 sum;
    const bool ok = ll_sum_unit<T, R>(rs, u, load_unit<T, kVec>(shard_in(me), u, shard_n(me)), me, world, wait, &sum);
    store_unit<T, kVec>(out + me * shard_len, u, shard_n(me), sum);
    // A sum that failed is never published: its readers must time out and
    // report, not take NaN under a valid LL flag for a result.
    if (ok && !call.aborted) {
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (r < world && r != me) ll_store_unit(ag_me_on[r], u, sum, flag);
    }
  }

  // 3. all-gather: every peer's reduced shard. Twice the timeout: when a
  // rank is lost, the reduce-scatter waits (which name it) give up first,
  // not these (which would name a healthy owner stuck waiting for it).
  PollWait ag_wait = wait;
  ag_wait.timeout_ns *= 2;
  const uint64_t* ag[R];
#pragma unroll
  for (int r = 0; r < R; ++r) ag[r] = r < world ? ll_slot<R>(s, me, world + r, e, slot_bytes) : nullptr;
  for (size_t u = lo + threadIdx.x; u < hi; u += blockDim.x) {
    const uint64_t* at[R];
    bool live[R];
    int peer[R];
    LLRaw raw[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      live[r] = r < world && r != me;
      at[r] = live[r] ? ll_at(ag[r], u) : nullptr;
      peer[r] = r;
    }
    const bool ok = ll_poll(at, live, peer, ag_wait, raw);
    const Pack<T, K> nan = nan_pack<T, K>();
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (live[r]) store_unit<T, kVec>(out + r * shard_len, u, shard_n(r), ok ? ll_data(raw[r]) : *reinterpret_cast<const uint4*>(&nan));
  }
  op_end(s, e);
}

// Units of every peer for one index: the reduce-scatter push loads them all
// before it stores any.
template <int R>
struct PeerUnits {
  uint4 d[R];
};

// TWO-SHOT over sentinel units (sentinel.cuh), above the LL sizes. The
// chunk is cut into `world` shards of shard_len elements (twoshot_shard_len);
// CTA b owns units [lo, hi) of every shard. Rank q's data region holds, for
// each peer src, RS[src] at slot peer_slot(src, q) and AG[src] at slot
// peer_slots(world) + peer_slot(src, q) (workspace_layout.h), `cap` units
// each.
//   1. push unit u of shard j to RS[me] on rank j, every peer for each u (so
//      that all links carry data at once, never all ranks into one);
//   2. poll RS[r] of every peer, sum own shard in rank order, write it to
//      the output and push it to AG[me] on every peer; clear what was read;
//   3. poll AG[r] of every peer, copy its reduced shard to the output, clear.
// No signal and no CTA pairing: each thread waits only for the units it
// reads. In place is safe: a unit of `in` is read (steps 1 and 2) by the
// thread that later writes it, before it writes it.
template <typename T, bool kVec, int R>
__global__ void __launch_bounds__(kThreadsPerBlock, 2) allreduce_twoshot_kernel(AllReduceParams p) {
  pdl_begin();
  const CallRead read = op_read(p.sync);  // EPOCH: issued first, completed by op_begin
  constexpr int K = static_cast<int>(kSntUnitBytes / sizeof(T));
  const SyncParams& s = p.sync;
  const int me = s.rank, world = s.world;
  const T* in = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  const size_t n = p.count;
  const size_t shard_len = twoshot_shard_len(n, world);  // a multiple of kElemAlign, so of K
  const size_t su = shard_len / K;                        // units per shard
  const size_t per_cta = snt_span(su, gridDim.x);
  const size_t lo = min(su, blockIdx.x * per_cta), hi = min(su, lo + per_cta);
  auto shard_in = [&](int j) { return in + j * shard_len; };
  auto shard_n = [&](int j) { return n > j * shard_len ? n - j * shard_len : size_t{0}; };
  const CallStart call = op_begin(read);
  const uint64_t e = call.e;
  const size_t cap = s.layout.twoshot_shard_capacity(sizeof(T)) / K;  // units per slot
  const PollWait wait = poll_wait_of(s, call);
  const size_t parity = s.layout.data_parity_offset(e);
  // Rank r's data region (r compile-time: the base stays a kernel parameter).
  auto region = [&](int r) { return reinterpret_cast<uint4*>(s.ws[r] + parity); };
  uint4* local = snt_region<R>(s, me, e);
  const size_t ag_slot0 = peer_slots(world);
  // RS[r] and AG[r] in this rank's region; my slots in rank r's.
  auto rs_from = [&](int r) { return local + peer_slot(r, me) * cap; };
  auto ag_from = [&](int r) { return local + (ag_slot0 + peer_slot(r, me)) * cap; };
  auto rs_on = [&](int r) { return region(r) + peer_slot(me, r) * cap; };
  auto ag_on = [&](int r) { return region(r) + (ag_slot0 + peer_slot(me, r)) * cap; };

  // 1. reduce-scatter push
  if (!call.aborted) {
    for_packs<kCopyUnroll / 2, PeerUnits<R>>(
        lo, hi,
        [&](size_t u) {
          PeerUnits<R> v;
#pragma unroll
          for (int r = 0; r < R; ++r)
            if (r < world && r != me) v.d[r] = load_unit<T, kVec>(shard_in(r), u, shard_n(r));
          return v;
        },
        [&](size_t u, const PeerUnits<R>& v) {
#pragma unroll
          for (int r = 0; r < R; ++r)
            if (r < world && r != me) snt_store<T>(rs_on(r) + u, v.d[r]);
        });
  }

  // 2. reduce own shard, write it, push it to every peer's AG[me]
  for (size_t u = lo + threadIdx.x; u < hi; u += blockDim.x) {
    uint4 sum;
    const bool ok =
        snt_sum_unit<T, R>(rs_from, u, load_unit<T, kVec>(shard_in(me), u, shard_n(me)), me, world, wait, &sum);
    store_unit<T, kVec>(out + me * shard_len, u, shard_n(me), sum);
    // A sum that failed is never published: its readers must time out and
    // report, not take NaN for a result.
    if (ok && !call.aborted) {
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (r < world && r != me) snt_store<T>(ag_on(r) + u, sum);
    }
  }

  // 3. all-gather; twice the timeout, as in the two-shot over LL.
  PollWait ag_wait = wait;
  ag_wait.timeout_ns *= 2;
  for (size_t u = lo + threadIdx.x; u < hi; u += blockDim.x) {
    const uint4* at[R];
    bool live[R];
    int peer[R];
    uint4 raw[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      live[r] = r < world && r != me;
      at[r] = live[r] ? ag_from(r) + u : nullptr;
      peer[r] = r;
    }
    const bool ok = snt_poll<T>(at, live, peer, ag_wait, raw);
    const Pack<T, K> nan = nan_pack<T, K>();
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (!live[r]) continue;
      store_unit<T, kVec>(out + r * shard_len, u, shard_n(r), ok ? raw[r] : *reinterpret_cast<const uint4*>(&nan));
      if (ok) snt_clear(ag_from(r) + u);
    }
  }
  op_end(s, e);
}

}  // namespace arnorm
