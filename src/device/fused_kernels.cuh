// Kernel bodies of all-reduce + residual add + RMSNorm. The split kernels
// (one-shot, and two-shot over LL) give each row a thread-block cluster and
// end in split_epilogue; the others give each CTA whole rows (rows_per_cta
// each) and end in rmsnorm_row. R is the rank capacity, as in
// allreduce_kernels.cuh; kPacks the virtual packs per thread of the split
// epilogue (split_packs in core/plan.h). Every kernel computes the sum
// of squares in the one order of rmsnorm_epilogue.cuh, so one-shot, two-shot
// and the norm after NCCL produce the same bits for the same sums.
// These kernels hold a row in registers (one CTA per multiprocessor; the
// two-shot over sentinel units has 384 threads, 256 of them the epilogue's),
// so a grid has at most max_blocks / 2 CTAs (fused_max_active in
// core/plan.h); the split one-shot, two per multiprocessor where its
// instance fits, up to what is resident (the launcher clips its grid).
#pragma once

#include "device/allreduce_kernels.cuh"
#include "device/cluster_exchange.cuh"
#include "device/ll.cuh"
#include "device/rmsnorm_epilogue.cuh"
#include "device/sentinel.cuh"

namespace arnorm {

template <typename T>
__device__ __forceinline__ RowEpilogue row_epilogue(const FusedParams& p, size_t row) {
  const size_t off = row * p.hidden;
  RowEpilogue r;
  r.residual = p.residual ? static_cast<const T*>(p.residual) + off : nullptr;
  r.residual_out = p.residual_out ? static_cast<T*>(p.residual_out) + off : nullptr;
  r.weight = p.weight;
  r.out = static_cast<T*>(p.out) + off;
  r.hidden = p.hidden;
  r.eps = p.eps;
  return r;
}

// LL unit holding element c of row `row` (rows contiguous in the slot).
template <typename T>
__device__ __forceinline__ size_t ll_unit_of(size_t row, size_t hidden, size_t c) {
  return (row * hidden + c) / (kLLUnitBytes / sizeof(T));
}

// Polls every peer's copy of the units of this thread's packs v0 + k *
// kThreadsPerBlock (k < kPacks, packs at or past nv skipped), kUnits units
// per pack, with up to 8 units in flight before any is checked: batches in
// rank order, item j being unit j % kUnits of pack (j % kPerRank) / kUnits
// of rank j / kPerRank. at_of(r, v, a) is the address of unit a of pack v
// from rank r; poll(at, live, peer, raw) waits for one batch (ll_poll,
// snt_poll); use(j0, raw, live) sees each batch once complete. False if any
// unit never arrived.
template <int R, int kPacks, int kUnits, typename Raw, typename Addr, typename AtOf, typename Poll, typename Use>
__device__ __forceinline__ bool poll_peer_packs(int me, int world, size_t v0, size_t nv, AtOf at_of, Poll poll,
                                                Use use) {
  constexpr int kPerRank = kPacks * kUnits;
  constexpr int kBatch = kPerRank * R < 8 ? kPerRank * R : 8;
  bool ok = true;
#pragma unroll
  for (int j0 = 0; j0 < R * kPerRank; j0 += kBatch) {
    if (j0 / kPerRank >= world) break;  // ranks past the world: nothing to poll
    Addr at[kBatch];
    bool live[kBatch];
    int peer[kBatch];
    Raw raw[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int r = (j0 + j) / kPerRank, k = ((j0 + j) % kPerRank) / kUnits, a = (j0 + j) % kUnits;
      const size_t v = v0 + k * kThreadsPerBlock;
      live[j] = r < world && r != me && v < nv;
      at[j] = live[j] ? at_of(r, v, a) : nullptr;
      peer[j] = r;
    }
    ok = poll(at, live, peer, raw) && ok;
    use(j0, raw, live);
  }
  return ok;
}

// Polls, in every peer's slot, the units of `row` this thread reads in one
// epilogue round (virtual packs v0 + k * kThreadsPerBlock, k < kPacks) until
// all are complete (packs at or past nv excluded); false if any never
// arrived. The vector path batches as poll_peer_packs and hands each batch
// to use(j0, raw, live).
template <typename T, bool kVec, int R, int kPacks, typename Use>
__device__ __forceinline__ bool ll_poll_round(const uint64_t* const* src, int me, int world, size_t row,
                                              size_t hidden, size_t v0, size_t nv, const PollWait& w, Use use) {
  constexpr int K = static_cast<int>(kLLUnitBytes / sizeof(T));
  bool ok = true;
  if constexpr (kVec) {
    ok = poll_peer_packs<R, kPacks, kRowVec / K, LLRaw, const uint64_t*>(
        me, world, v0, nv,
        [&](int r, size_t v, int a) { return ll_at(src[r], ll_unit_of<T>(row, hidden, v * kRowVec) + a); },
        [&](const auto& at, const auto& live, const auto& peer, auto& raw) { return ll_poll(at, live, peer, w, raw); },
        use);
  } else {
    for (int k = 0; k < kPacks; ++k) {
      const size_t v = v0 + k * kThreadsPerBlock;
      if (v >= nv) break;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= world || r == me) continue;
        for (size_t c = v * kRowVec; c < min(hidden, (v + 1) * kRowVec); ++c) {
          const uint64_t* at[1] = {ll_at(src[r], ll_unit_of<T>(row, hidden, c))};
          const bool live[1] = {true};
          const int peer[1] = {r};
          LLRaw raw[1];
          ok = ll_poll(at, live, peer, w, raw) && ok;
        }
      }
    }
  }
  return ok;
}

// Accumulates, in rank order, one completed batch of poll_peer_packs into
// acc[k][i] (fp32, from rank 0's value): peers' values from data(raw[j]),
// this rank's from mine.
template <typename T, int kPacks, int kUnits, int B, typename Raw, typename Data>
__device__ __forceinline__ void accumulate_batch(int j0, const Raw (&raw)[B], int me, int world,
                                                 const float (&mine)[kPacks][kRowVec], float (&acc)[kPacks][kRowVec],
                                                 Data data) {
  constexpr int K = kRowVec / kUnits;
  constexpr int kPerRank = kPacks * kUnits;
#pragma unroll
  for (int j = 0; j < B; ++j) {
    const int r = (j0 + j) / kPerRank, k = ((j0 + j) % kPerRank) / kUnits, a = (j0 + j) % kUnits;
    if (r >= world) continue;
    const uint4 d = data(raw[j]);
    const T* t = reinterpret_cast<const T*>(&d);
#pragma unroll
    for (int i = 0; i < K; ++i) {
      const float x = r == me ? mine[k][a * K + i] : Num<T>::to_float(t[i]);
      acc[k][a * K + i] = r == 0 ? x : __fadd_rn(acc[k][a * K + i], x);
    }
  }
}

// 8 elements of `row`, virtual pack v, from an LL slot whose units this
// thread has seen complete (ll_wait_row).
template <typename T, bool kVec>
__device__ __forceinline__ void ll_read_v8(const uint64_t* slot, size_t row, size_t v, size_t hidden, float* f) {
  constexpr int K = static_cast<int>(kLLUnitBytes / sizeof(T));
  if constexpr (kVec) {
    const size_t u0 = ll_unit_of<T>(row, hidden, v * kRowVec);
#pragma unroll
    for (int a = 0; a < kRowVec / K; ++a) {
      const uint4 d = ll_read_seen(slot, u0 + a);
      const T* t = reinterpret_cast<const T*>(&d);
#pragma unroll
      for (int i = 0; i < K; ++i) f[a * K + i] = Num<T>::to_float(t[i]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kRowVec; ++i) {
      const size_t c = v * kRowVec + i;
      f[i] = 0.f;
      if (c >= hidden) continue;
      const uint4 d = ll_read_seen(slot, ll_unit_of<T>(row, hidden, c));
      f[i] = Num<T>::to_float(reinterpret_cast<const T*>(&d)[(row * hidden + c) % K]);
    }
  }
}

// The rounded rank-order sums of one row for rmsnorm_row: this rank's own
// values from its input, every peer's from its LL slot in the local region.
template <typename T, bool kVec, int R, int kPacks = kRowRegs>
struct LLRowSums {
  static constexpr bool kFetchesRound = false;
  const uint64_t* const* src;  // src[r]: rank r's LL slot here
  const T* own;                // this rank's input row
  size_t row, hidden;
  int me, world;
  PollWait wait;

  __device__ __forceinline__ bool wait_packs(size_t v0, size_t nv) const {
    return ll_poll_round<T, kVec, R, kPacks>(src, me, world, row, hidden, v0, nv, wait,
                                             [](int, const auto&, const auto&) {});
  }
  __device__ __forceinline__ bool ready(size_t v0) const { return wait_packs(v0, ceil_div(hidden, size_t{kRowVec})); }

  // This rank's 8 values of virtual pack v (loaded before the wait).
  __device__ __forceinline__ void load_own(size_t v, float* f) const { load_v8<T, kVec>(own, v, hidden, f); }

  // The split epilogue's fetch: polls packs v0 + k * kThreadsPerBlock (<
  // v_end) of every peer and fills h[k] with their rounded rank-order sums,
  // taking the peers' values from the polled words themselves (no second
  // read) and this rank's from mine[k] (load_own). On the vector path up to
  // 8 units are in flight at once, batches in rank order, accumulated as
  // they complete.
  __device__ __forceinline__ bool fetch(size_t v0, size_t v_end, const float (&mine)[kPacks][kRowVec],
                                        float (&h)[kPacks][kRowVec]) const {
    if constexpr (!kVec) {
      const bool ok = wait_packs(v0, v_end);
#pragma unroll
      for (int k = 0; k < kPacks; ++k)
        if (v0 + k * kThreadsPerBlock < v_end) sum_at(v0 + k * kThreadsPerBlock, h[k]);
      return ok;
    } else {
      constexpr int kUnits = kRowVec / static_cast<int>(kLLUnitBytes / sizeof(T));
      float acc[kPacks][kRowVec];
      const bool ok = ll_poll_round<T, kVec, R, kPacks>(
          src, me, world, row, hidden, v0, v_end, wait, [&](int j0, const auto& raw, const auto&) {
            accumulate_batch<T, kPacks, kUnits>(j0, raw, me, world, mine, acc, [](const LLRaw& w) { return ll_data(w); });
          });
#pragma unroll
      for (int k = 0; k < kPacks; ++k)
#pragma unroll
        for (int i = 0; i < kRowVec; ++i) h[k][i] = round_to<T>(acc[k][i]);
      return ok;
    }
  }

  __device__ __forceinline__ void sum_at(size_t v, float* sum) const {
    float x[R][kRowVec];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= world) continue;
      if (r == me) load_v8<T, kVec>(own, v, hidden, x[r]);
      else ll_read_v8<T, kVec>(src[r], row, v, hidden, x[r]);
    }
#pragma unroll
    for (int i = 0; i < kRowVec; ++i) {
      float acc = x[0][i];
#pragma unroll
      for (int r = 1; r < R; ++r)
        if (r < world) acc = __fadd_rn(acc, x[r][i]);
      sum[i] = round_to<T>(acc);
    }
  }
};

// The rounded sums of one row, gathered in one LL area (two-shot over LL):
// unit u of the chunk at unit u of `area`, written by the rank that owns
// shard u / shard_units.
template <typename T, bool kVec, int kPacks>
struct LLGatheredSums {
  const uint64_t* area;
  size_t row, hidden, shard_units;
  PollWait wait;

  __device__ __forceinline__ void load_own(size_t, float*) const {}

  // The split epilogue's fetch (see LLRowSums): the gathered sums of packs
  // v0 + k * kThreadsPerBlock (< v_end), from the polled words themselves
  // on the vector path; the element-wise path polls each element's unit,
  // then reads it again.
  __device__ __forceinline__ bool fetch(size_t v0, size_t v_end, const float (&)[kPacks][kRowVec],
                                        float (&h)[kPacks][kRowVec]) const {
    constexpr int K = static_cast<int>(kLLUnitBytes / sizeof(T));
    if constexpr (kVec) {
      constexpr int kUnits = kRowVec / K;
      constexpr int kBatch = kPacks * kUnits;
      const uint64_t* at[kBatch];
      bool live[kBatch];
      int peer[kBatch];
      LLRaw raw[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const size_t v = v0 + (j / kUnits) * kThreadsPerBlock;
        const size_t u = ll_unit_of<T>(row, hidden, v * kRowVec) + j % kUnits;
        live[j] = v < v_end;
        at[j] = live[j] ? ll_at(area, u) : nullptr;
        peer[j] = static_cast<int>(u / shard_units);
      }
      const bool ok = ll_poll(at, live, peer, wait, raw);
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const uint4 d = ll_data(raw[j]);
        const T* t = reinterpret_cast<const T*>(&d);
#pragma unroll
        for (int i = 0; i < K; ++i) h[j / kUnits][(j % kUnits) * K + i] = Num<T>::to_float(t[i]);
      }
      return ok;
    } else {
      bool ok = true;
      for (int k = 0; k < kPacks; ++k) {
        const size_t v = v0 + k * kThreadsPerBlock;
        if (v >= v_end) break;
        for (size_t c = v * kRowVec; c < min(hidden, (v + 1) * kRowVec); ++c) {
          const size_t u = ll_unit_of<T>(row, hidden, c);
          const uint64_t* at[1] = {ll_at(area, u)};
          const bool live[1] = {true};
          const int peer[1] = {static_cast<int>(u / shard_units)};
          LLRaw raw[1];
          ok = ll_poll(at, live, peer, wait, raw) && ok;
        }
        ll_read_v8<T, kVec>(area, row, v, hidden, h[k]);
      }
      return ok;
    }
  }
};

// The rank-order sums of one row from sentinel units (one-shot over
// sentinel units, sentinel.cuh): rank r's unit u of the chunk at
// local[r * cap + u], this rank's values from its input. hidden % 8 == 0, so
// a virtual pack is kUnits whole units and each unit is polled, read and
// cleared by the one thread that owns its pack (CLEAN REGIONS). The fetch
// is that of LLRowSums: batches of up to 8 units in rank order.
template <typename T, bool kVec, int R, int kPacks>
struct SntPeerRowSums {
  uint4* local;
  size_t cap;
  const T* own;  // this rank's input row
  size_t row, hidden;
  int me, world;
  PollWait wait;

  __device__ __forceinline__ void load_own(size_t v, float* f) const { load_v8<T, kVec>(own, v, hidden, f); }

  __device__ __forceinline__ bool fetch(size_t v0, size_t v_end, const float (&mine)[kPacks][kRowVec],
                                        float (&h)[kPacks][kRowVec]) const {
    constexpr int K = static_cast<int>(kSntUnitBytes / sizeof(T));
    constexpr int kUnits = kRowVec / K;
    float acc[kPacks][kRowVec];
    const size_t u0 = row * hidden / K;  // the row's first unit (hidden % 8 == 0)
    const bool ok = poll_peer_packs<R, kPacks, kUnits, uint4, const uint4*>(
        me, world, v0, v_end, [&](int r, size_t v, int a) { return local + r * cap + u0 + v * kUnits + a; },
        [&](const auto& at, const auto& live, const auto& peer, auto& raw) { return snt_poll<T>(at, live, peer, wait, raw); },
        [&](int j0, const auto& raw, const auto& live) {
          accumulate_batch<T, kPacks, kUnits>(j0, raw, me, world, mine, acc, [](const uint4& d) { return d; });
          constexpr int B = sizeof(live) / sizeof(live[0]);
          constexpr int kPerRank = kPacks * kUnits;
#pragma unroll
          for (int j = 0; j < B; ++j) {
            const int r = (j0 + j) / kPerRank, k = ((j0 + j) % kPerRank) / kUnits, a = (j0 + j) % kUnits;
            // (After a failed poll the call has aborted: a clear then is harmless.)
            if (live[j]) snt_clear(local + r * cap + u0 + (v0 + k * kThreadsPerBlock) * kUnits + a);
          }
        });
#pragma unroll
    for (int k = 0; k < kPacks; ++k)
#pragma unroll
      for (int i = 0; i < kRowVec; ++i) h[k][i] = round_to<T>(acc[k][i]);
    return ok;
  }
};

// ONE-SHOT FUSED (LL, ll.cuh). Push: the chunk's rows form one flat range of
// rows x hidden elements, cut in 16-byte units over all active CTAs; each CTA
// pushes its units as LL words into slot [me] of every peer. Rows: CTA b owns
// rows [b*rows_per_cta, ...) and polls every peer's copy of them in its own
// LL region, whoever pushed them there. No CTA waits for another to signal,
// so the push uses every active CTA even for a single row.
template <typename T, typename W, bool kVec, int R>
__global__ void __launch_bounds__(kThreadsPerBlock, 1) fused_oneshot_kernel(FusedParams p) {
  pdl_begin();
  const CallRead read = op_read(p.sync);  // EPOCH: issued first, completed by op_begin
  const SyncParams& s = p.sync;
  const int me = s.rank, world = s.world;
  const size_t H = p.hidden;
  const T* in = static_cast<const T*>(p.in);
  // Push range: 16-byte units of the flat rows x hidden range. The input is
  // 16-byte aligned on the vector path (rows of a multiple of 8 elements).
  const size_t n = p.rows * H;
  const UnitRange ur = cta_units<T, kVec>(in, n);
  const CallStart call = op_begin(read);
  const uint64_t e = call.e;
  const size_t r0 = min(p.rows, blockIdx.x * p.rows_per_cta), r1 = min(p.rows, r0 + p.rows_per_cta);
  const size_t slot_bytes = s.layout.oneshot_slot_bytes(sizeof(T));
  if (!call.aborted) ll_push<T, kVec, R>(s, e, slot_bytes, in, n, ur.lo, ur.hi, ur.first);

  const PollWait wait = poll_wait_of(s, call);
  const uint64_t* src[R];
#pragma unroll
  for (int r = 0; r < R; ++r) src[r] = r < world ? ll_slot<R>(s, me, r, e, slot_bytes) : nullptr;
  for (size_t row = r0; row < r1; ++row) {
    const RowEpilogue ep = row_epilogue<T>(p, row);
    const bool ok = rmsnorm_row<T, W, kVec>(ep, LLRowSums<T, kVec, R>{src, in + row * H, row, H, me, world, wait});
    // A row with any missing unit is NaN as a whole; the barrier orders
    // every write of the epilogue before the poison.
    if (__syncthreads_or(!ok)) poison_row<T>(ep);
  }
  op_end(s, e);
}

// SPLIT EPILOGUE (CLUSTER EXCHANGE, cluster_exchange.cuh). A cluster of C =
// p.cluster CTAs owns one row at a time (rows cluster_id, cluster_id +
// clusters, ...); CTA c holds virtual packs [c*P, (c+1)*P) of the row, P =
// ceil(nv/C) <= kPacks * kThreadsPerBlock, in registers. It issues its
// residual, weight and own-input loads, fetches its packs' sums
// (sums_of_row(row).fetch), adds the residual and computes each pack's q_v,
// which it keeps in its own q buffer and sends into every other CTA's. Each
// CTA then folds all q_v of the row from its own shared memory in the order
// of the invariant in rmsnorm_epilogue.cuh, so every CTA gets the scale one
// CTA would, and whether any pack of the row failed (q_v = -1: a sum of
// squares is never negative). Call with whole clusters only (every CTA of a
// cluster runs the same rows) and with xs set up before griddepcontrol.wait.
template <typename T, typename W, bool kVec, int kPacks, typename SumsOfRow>
__device__ __forceinline__ void split_epilogue(const FusedParams& p, ClusterExchange<kPacks>& xs,
                                               SumsOfRow sums_of_row, const PhaseClock& clock) {
  using X = ClusterExchange<kPacks>;
  const size_t H = p.hidden;
  // 32-bit: a split row has at most kMaxFusedCluster * kPacks * kThreadsPerBlock packs.
  const uint32_t C = static_cast<uint32_t>(p.cluster), c = C > 1 ? cluster_cta_rank() : 0;
  const uint32_t clusters = gridDim.x / C;
  const uint32_t nv = static_cast<uint32_t>(ceil_div(H, size_t{kRowVec}));
  const uint32_t P = (nv + C - 1) / C;
  const uint32_t v_begin = min(nv, c * P), v_end = min(nv, v_begin + P);
  const uint32_t v0 = v_begin + threadIdx.x;
  const uint32_t from_others = (nv - (v_end - v_begin)) * static_cast<uint32_t>(sizeof(float));
  const W* gamma = static_cast<const W*>(p.weight);

  uint32_t it = 0;
  for (size_t row = blockIdx.x / C; row < p.rows; row += clusters, ++it) {
    // PHASE CLOCK marks of CTA 0's first row only.
    const bool first = row < clusters;
    const int b = static_cast<int>(it % X::kBufs);
    const uint32_t use = it / X::kBufs;
    float* q = xs.q[b];
    if (C > 1 && threadIdx.x == 0) xs.expect(b, from_others);
    const RowEpilogue ep = row_epilogue<T>(p, row);
    const T* res = static_cast<const T*>(ep.residual);
    const auto sums = sums_of_row(row);
    // Residual and weight held as stored, converted where used: their loads
    // issue back to back (load_raw8).
    float h[kPacks][kRowVec], mine[kPacks][kRowVec];
    Pack<T, kRowVec> x[kPacks];
    Pack<W, kRowVec> g[kPacks];
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const size_t v = v0 + k * kThreadsPerBlock;
      if (v >= v_end) continue;
      if (res) x[k] = load_raw8<T, kVec>(res, v, H);
      g[k] = load_raw8<W, kVec>(gamma, v, H);
      sums.load_own(v, mine[k]);
    }
    if (first) clock.mark(3);
    const bool ok = sums.fetch(v0, v_end, mine, h);
    if (first) clock.mark(4);
    // Only threads that send wait for the buffer's hand-back.
    if (C > 1 && use > 0 && v0 < v_end) xs.wait_handed_back(b, use);
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const size_t v = v0 + k * kThreadsPerBlock;
      if (v >= v_end) continue;
      if (res) {
#pragma unroll
        for (int i = 0; i < kRowVec; ++i) h[k][i] = round_to<T>(__fadd_rn(h[k][i], Num<T>::to_float(x[k].v[i])));
      }
      if (ep.residual_out) store_v8<T, kVec>(static_cast<T*>(ep.residual_out), v, H, h[k]);
      const float qv = ok ? pack_squares(h[k]) : -1.f;
      q[v] = qv;
      if (C > 1) xs.send(b, static_cast<uint32_t>(v), qv, c, C);
    }
    if (first) clock.mark(5);
    __syncthreads();  // this CTA's own q_v
    if (C > 1) xs.wait_full(b, use);
    if (first) clock.mark(6);
    // Virtual thread t = threadIdx.x folds q_t, q_{t+256}, ...
    float ss = 0.f;
    bool failed = false;
#pragma unroll 4
    for (uint32_t u = threadIdx.x; u < nv; u += kThreadsPerBlock) {
      const float qu = q[u];
      ss = __fadd_rn(ss, qu);
      failed = failed || qu < 0.f;
    }
    if (first) clock.mark(7);
    const float total = block_sum_any(ss, &failed);
    // Every thread of this CTA has read q[b] (block_sum_any's barrier).
    if (C > 1) xs.hand_back(b, c, C);
    const float scale = rsqrtf(__fadd_rn(__fdiv_rn(total, static_cast<float>(H)), ep.eps));
    if (first) clock.mark(8);
    if (failed) {
      // A row with any missing unit is NaN as a whole, in every CTA's part.
      const T nan = Num<T>::from_float(__int_as_float(0x7fc00000));
      for (size_t i = size_t{v_begin} * kRowVec + threadIdx.x; i < min(H, size_t{v_end} * kRowVec); i += kThreadsPerBlock) {
        static_cast<T*>(ep.out)[i] = nan;
        if (ep.residual_out) static_cast<T*>(ep.residual_out)[i] = nan;
      }
      continue;
    }
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const size_t v = v0 + k * kThreadsPerBlock;
      if (v >= v_end) continue;
#pragma unroll
      for (int i = 0; i < kRowVec; ++i) h[k][i] = __fmul_rn(__fmul_rn(h[k][i], scale), Num<W>::to_float(g[k].v[i]));
      store_v8<T, kVec>(static_cast<T*>(ep.out), v, H, h[k]);
    }
    if (first) clock.mark(9);
  }
  // No CTA leaves while another may still arrive on its barriers.
  if (C > 1 && threadIdx.x == 0) xs.drain(it);
}

// ONE-SHOT FUSED BODY, shared by the split and the wide one-shot: the call's
// start, the push of the chunk's flat range of 16-byte units (cut over all
// CTAs) into slot [me] of every peer, epilogue(sums_of_row, clock) over the
// rows, the call's end. kLL: LL words in the LL region; else sentinel units
// in the data region (rows of whole 8-element packs only: plan_fused_route),
// slot [r] of each rank `cap` units long, which carry half the bytes of LL
// words. sums_of_row(row) gives the rank-order sums of `row` with kPacks
// packs a thread.
template <typename T, bool kVec, int R, int kPacks, bool kLL, typename Epilogue>
__device__ __forceinline__ void fused_oneshot_body(const FusedParams& p, Epilogue epilogue) {
  pdl_begin();
  const long long t0 = PhaseClock::now();  // (mark 0: before the loads, as before op_read)
  const CallRead read = op_read(p.sync);    // EPOCH: issued first, completed by op_begin
  const SyncParams& s = p.sync;
  const int me = s.rank, world = s.world;
  const size_t H = p.hidden;
  const T* in = static_cast<const T*>(p.in);
  const size_t n = p.rows * H;
  const UnitRange ur = cta_units<T, kVec>(in, n);
  const CallStart call = op_begin(read);
  const uint64_t e = call.e;
  const PhaseClock clock(s, e, t0);
  clock.mark(1);
  const PollWait wait = poll_wait_of(s, call);
  if constexpr (kLL) {
    const uint64_t* src[R];
    ll_oneshot_begin<T, kVec, R>(s, call, in, n, ur, src);
    clock.mark(2);
    epilogue([&](size_t row) { return LLRowSums<T, kVec, R, kPacks>{src, in + row * H, row, H, me, world, wait}; },
             clock);
  } else {
    const size_t cap = s.layout.oneshot_snt_chunk_elems(sizeof(T)) / (kSntUnitBytes / sizeof(T));
    if (!call.aborted) snt_push<T, kVec, R>(s, e, cap, in, n, ur);
    clock.mark(2);
    uint4* local = snt_region<R>(s, me, e);
    epilogue(
        [&](size_t row) { return SntPeerRowSums<T, kVec, R, kPacks>{local, cap, in + row * H, row, H, me, world, wait}; },
        clock);
  }
  op_end(s, e);
  clock.mark(11);
}

// ONE-SHOT FUSED, rows split over a thread-block cluster: the push of
// fused_oneshot_body (as fused_oneshot_kernel's), then the split epilogue,
// each CTA polling its packs of every peer and summing them with its own
// input in rank order. Instances with one pack per thread and at most 4
// ranks fit 128 registers without spilling (ptxas), so two CTAs share a
// multiprocessor: twice the clusters resident at once, so rows up to twice
// as many go in one round.
template <typename T, typename W, bool kVec, int R, int kPacks, bool kLL>
__global__ void __launch_bounds__(kThreadsPerBlock, kPacks == 1 && R <= 4 ? 2 : 1)
    fused_oneshot_split_kernel(FusedParams p) {
  __shared__ ClusterExchange<kPacks> xs;
  xs.setup(static_cast<uint32_t>(p.cluster));  // before fused_oneshot_body's griddepcontrol.wait
  fused_oneshot_body<T, kVec, R, kPacks, kLL>(p, [&](auto sums_of_row, const PhaseClock& clock) {
    split_epilogue<T, W, kVec, kPacks>(p, xs, sums_of_row, clock);
  });
}

// WIDE EPILOGUE: a row of nv <= kWideThreads virtual packs in one CTA of
// kWideThreads threads, thread v holding pack v - the split epilogue's work
// for a cluster of two without the cluster. The q_v go to shared memory;
// after one CTA barrier each half of the CTA folds them as the invariant's
// virtual threads t = threadIdx.x % kThreadsPerBlock do (q_t, then
// q_{t+256}) and adds its eight warp totals in warp order, as block_sum_any
// does; both halves compute the same sum, so every thread gets the scale one
// CTA of the split would, with no cluster barrier and no remote
// shared-memory read. Rows blockIdx.x, blockIdx.x + gridDim.x, ...
// Reuse across rows: every read of a row's q_smem comes before that row's
// second barrier and every write of the next row's after it; every read of
// a row's warp_total / warp_flag comes before the next row's first barrier
// and every write of the next row's after it.
template <typename T, typename W, typename SumsOfRow>
__device__ __forceinline__ void wide_epilogue(const FusedParams& p, SumsOfRow sums_of_row, const PhaseClock& clock) {
  __shared__ float2 q_smem[kWideThreads];  // {q_v, 1 if the pack's sums never came}
  __shared__ float warp_total[2][kThreadsPerBlock / 32];
  __shared__ int warp_flag[2][kThreadsPerBlock / 32];
  const size_t H = p.hidden;
  const uint32_t nv = static_cast<uint32_t>(ceil_div(H, size_t{kRowVec}));
  const uint32_t v = threadIdx.x, half = threadIdx.x / kThreadsPerBlock, t = threadIdx.x % kThreadsPerBlock;
  const W* gamma = static_cast<const W*>(p.weight);
  for (size_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const bool first = row == blockIdx.x;  // PHASE CLOCK marks of the first row only
    const RowEpilogue ep = row_epilogue<T>(p, row);
    const T* res = static_cast<const T*>(ep.residual);
    const auto sums = sums_of_row(row);
    float h[1][kRowVec], mine[1][kRowVec];
    Pack<T, kRowVec> x;  // as stored, converted where used (split_epilogue)
    Pack<W, kRowVec> g;
    if (v < nv) {
      if (res) x = load_raw8<T, true>(res, v, H);
      g = load_raw8<W, true>(gamma, v, H);
      sums.load_own(v, mine[0]);
    }
    if (first) clock.mark(3);
    const bool ok = sums.fetch(v, nv, mine, h);
    if (first) clock.mark(4);
    if (v < nv) {
      if (res) {
#pragma unroll
        for (int i = 0; i < kRowVec; ++i) h[0][i] = round_to<T>(__fadd_rn(h[0][i], Num<T>::to_float(x.v[i])));
      }
      if (ep.residual_out) store_v8<T, true>(static_cast<T*>(ep.residual_out), v, H, h[0]);
      q_smem[v] = make_float2(pack_squares(h[0]), ok ? 0.f : 1.f);
    }
    if (first) clock.mark(5);
    __syncthreads();
    if (first) clock.mark(6);
    float ss = 0.f;
    bool failed = false;
    for (uint32_t u = t; u < nv; u += kThreadsPerBlock) {
      ss = __fadd_rn(ss, q_smem[u].x);
      failed = failed || q_smem[u].y != 0.f;
    }
    if (first) clock.mark(7);
    const int f = __any_sync(0xffffffffu, failed);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss = __fadd_rn(ss, __shfl_xor_sync(0xffffffffu, ss, o));
    if ((t & 31) == 0) {
      warp_total[half][t >> 5] = ss;
      warp_flag[half][t >> 5] = f;
    }
    __syncthreads();
    float total = warp_total[half][0];
    int any = warp_flag[half][0];
#pragma unroll
    for (int w = 1; w < kThreadsPerBlock / 32; ++w) {
      total = __fadd_rn(total, warp_total[half][w]);
      any |= warp_flag[half][w];
    }
    const float scale = rsqrtf(__fadd_rn(__fdiv_rn(total, static_cast<float>(H)), ep.eps));
    if (first) clock.mark(8);
    if (any) {
      // A row with any missing unit is NaN as a whole.
      const T nan = Num<T>::from_float(__int_as_float(0x7fc00000));
      for (size_t i = threadIdx.x; i < H; i += kWideThreads) {
        static_cast<T*>(ep.out)[i] = nan;
        if (ep.residual_out) static_cast<T*>(ep.residual_out)[i] = nan;
      }
      continue;
    }
    if (v < nv) {
#pragma unroll
      for (int i = 0; i < kRowVec; ++i) h[0][i] = __fmul_rn(__fmul_rn(h[0][i], scale), Num<W>::to_float(g.v[i]));
      store_v8<T, true>(static_cast<T*>(ep.out), v, H, h[0]);
    }
    if (first) clock.mark(9);
  }
}

// ONE-SHOT FUSED in WIDE CTAs (fused_wide, core/plan.h): the push of the
// split one-shot (the chunk's flat range of 16-byte units cut over all
// CTAs), then each CTA takes whole rows through the wide epilogue. The
// vector path only; over LL or sentinel units as the split one-shot. Every
// CTA must be resident (launch_fused.cu): a CTA may wait for units the
// peers' CTAs push, whose own waits may be on this rank's pushes.
template <typename T, typename W, int R, bool kLL>
__global__ void __launch_bounds__(kWideThreads, 1) fused_oneshot_wide_kernel(FusedParams p) {
  fused_oneshot_body<T, true, R, 1, kLL>(
      p, [&](auto sums_of_row, const PhaseClock& clock) { wide_epilogue<T, W>(p, sums_of_row, clock); });
}

// TWO-SHOT FUSED over LL (ll.cuh), rows through the split epilogue. The
// chunk's rows form one flat range of 16-byte units, cut into `world` shards
// of su units; rank j owns shard j. Rank q's LL region holds RS[src] (slots
// 0..world-1, su units each) and, from slot `world` on, one all-gather area
// with every unit of the chunk at its own index.
//   1. every active CTA pushes its part of the flat range: unit u goes to
//      RS[me] on rank u / su (own shard units stay home);
//   2. the active CTAs cut this rank's shard: poll RS[r] of every peer, sum
//      in rank order with the own input (rounded once), push the sums into
//      the all-gather area of every rank, this one included;
//   3. split epilogue, polling the gathered sums.
// Only the gathered sums cross NVLink twice; no CTA waits for a same-index
// CTA of a peer, so ranks may cut their CTAs differently.
template <typename T, typename W, bool kVec, int R, int kPacks>
__global__ void __launch_bounds__(kThreadsPerBlock, 1) fused_twoshot_ll_kernel(FusedParams p) {
  __shared__ ClusterExchange<kPacks> xs;
  xs.setup(static_cast<uint32_t>(p.cluster));  // shared memory only: before griddepcontrol.wait
  pdl_begin();
  const long long t0 = PhaseClock::now();  // (mark 0: before the loads, as before op_read)
  const CallRead read = op_read(p.sync);    // EPOCH: issued first, completed by op_begin
  const SyncParams& s = p.sync;
  const int me = s.rank, world = s.world;
  const T* in = static_cast<const T*>(p.in);
  const size_t n = p.rows * p.hidden;
  const UnitRange ur = cta_units<T, kVec>(in, n);
  const size_t units = ur.units, lo = ur.lo, hi = ur.hi;
  const size_t su = ll_span(units, world);  // whole LL groups, so shards start on one
  const CallStart call = op_begin(read);
  const uint64_t e = call.e;
  const PhaseClock clock(s, e, t0);
  clock.mark(1);
  const uint32_t flag = ll_flag(e);
  const size_t slot_bytes = s.layout.twoshot_ll_slot_bytes(sizeof(T));
  const PollWait wait = poll_wait_of(s, call);

  // 1. reduce-scatter push
  if (!call.aborted) {
    auto push = [&](size_t u, const uint4& d) {
      const int owner = static_cast<int>(u / su);
      if (owner != me) ll_store_unit(ll_slot<R>(s, owner, me, e, slot_bytes), u - owner * su, d, flag);
    };
    if (lo + threadIdx.x < hi) push(lo + threadIdx.x, ur.first);
    for_packs<kCopyUnroll, uint4>(
        lo + blockDim.x, hi, [&](size_t u) { return load_unit<T, kVec>(in, u, n); }, push);
  }
  clock.mark(2);

  // 2. reduce this rank's shard, push the sums to every all-gather area
  const uint64_t* rs[R];
  uint64_t* ag_on[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    rs[r] = r < world ? ll_slot<R>(s, me, r, e, slot_bytes) : nullptr;
    ag_on[r] = r < world ? ll_slot<R>(s, r, world, e, slot_bytes) : nullptr;
  }
  const size_t a = min(units, me * su), b = min(units, a + su);
  const size_t per = ll_span(b - a, gridDim.x);
  const size_t mlo = min(b, a + blockIdx.x * per), mhi = min(b, mlo + per);
  for (size_t u = mlo + threadIdx.x; u < mhi; u += blockDim.x) {
    uint4 sum;
    // A sum that failed is never published (see the plain two-shot over LL).
    if (ll_sum_unit<T, R>(rs, u - a, load_unit<T, kVec>(in, u, n), me, world, wait, &sum) && !call.aborted) {
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (r < world) ll_store_unit(ag_on[r], u, sum, flag);
    }
  }

  clock.mark(10);

  // 3. rows from the gathered sums
  const uint64_t* gathered = ll_slot<R>(s, me, world, e, slot_bytes);
  PollWait ag_wait = wait;  // twice the timeout, as in the plain two-shot over LL
  ag_wait.timeout_ns *= 2;
  split_epilogue<T, W, kVec, kPacks>(
      p, xs, [&](size_t row) { return LLGatheredSums<T, kVec, kPacks>{gathered, row, p.hidden, su, ag_wait}; }, clock);
  op_end(s, e);
  clock.mark(11);
}

// The rounded sums of one row gathered in sentinel units (sentinel.cuh):
// unit u of the row at row[u], written by the rank that owns shard
// u / shard_units. Each unit is polled, read and cleared by one thread.
// kStride: threads working on the row (rmsnorm_row's kRowThreads).
// kAddOwn (the ONE-SHOT over the pipeline, 2 ranks): row[u] holds the peer's
// input instead, written by `peer`, and each sum is that added once in fp32
// to this rank's own input (`own`, `hidden` elements) and rounded. IEEE
// addition is commutative (signed zeros and the canonical NaN included), so
// that is sum_in_rank_order's bits whichever rank is first.
template <typename T, int kStride = kThreadsPerBlock, bool kAddOwn = false, bool kVec = true>
struct SntRowSums {
  static constexpr bool kFetchesRound = true;
  static constexpr int kRowStride = kStride;
  uint4* row;
  size_t units, shard_units;
  PollWait wait;
  const T* own = nullptr;  // kAddOwn only
  size_t hidden = 0;       // kAddOwn only
  int peer = 0;            // kAddOwn only

  // Fills h[k] with the 8 sums of virtual pack v0 + k * kStride (< nv;
  // zeros past the row), as they arrived, once all their units have.
  __device__ __forceinline__ bool fetch_round(size_t v0, size_t nv, Pack<T, kRowVec> (&h)[kRowRegs]) const {
    constexpr int K = static_cast<int>(kSntUnitBytes / sizeof(T));
    constexpr int kUnits = kRowVec / K;  // units per virtual pack
    constexpr int B = kRowRegs * kUnits;
    // Unit j is at a constant offset from the round's first (no address
    // array); its writer, the shard's owner, is worked out only for a report.
    uint4* const base = row + v0 * kUnits;
    auto offset = [](int j) { return (j / kUnits) * kStride * kUnits + j % kUnits; };
    bool live[B];
    uint4 raw[B];
    uint4 mine[kAddOwn ? B : 1];
#pragma unroll
    for (int j = 0; j < B; ++j) {
      const size_t v = v0 + (j / kUnits) * kStride;
      live[j] = v < nv && v * kUnits + j % kUnits < units;
      if constexpr (kAddOwn) {
        // Issued before the poll, so their latency overlaps its wait.
        mine[j] = raw[j] = make_uint4(0u, 0u, 0u, 0u);
        if (live[j]) mine[j] = load_unit<T, kVec>(own, v0 * kUnits + offset(j), hidden);
      }
    }
    const bool ok = poll_batch_of(
        live,
        [&](int j) { return kAddOwn ? peer : static_cast<int>((v0 * kUnits + offset(j)) / shard_units); }, wait,
        raw, [&](int j) { return snt_fetch(base + offset(j)); }, [](const uint4& d) { return snt_ready<T>(d); });
#pragma unroll
    for (int j = 0; j < B; ++j) {
      uint4 sum = live[j] ? raw[j] : make_uint4(0u, 0u, 0u, 0u);
      if constexpr (kAddOwn) {
        Pack<T, K> p;
        const T* a = reinterpret_cast<const T*>(&mine[j]);
        const T* b = reinterpret_cast<const T*>(&raw[j]);
#pragma unroll
        for (int k = 0; k < K; ++k) p.v[k] = Num<T>::from_float(__fadd_rn(Num<T>::to_float(a[k]), Num<T>::to_float(b[k])));
        sum = *reinterpret_cast<const uint4*>(&p);
      }
      reinterpret_cast<uint4*>(h[j / kUnits].v)[j % kUnits] = sum;
      if (ok && live[j]) snt_clear(base + offset(j));
    }
    return ok;
  }
};

// Units a lane of the fused two-shot reduces per batch: the batch polls
// every peer's copy of them at once (snt_sum_units): 2 units at R = 4, else
// 4. At R = 2 (2x H200) 3 units took 1024 x 7168 and 1024 x 8192 from 60.6
// / 67.6 to 56.3 / 62.3 us, but 128 x 7168 from 12.7 to 14.9 and the ring's
// 8192 x 7168 from 397 to 418: a batch is one poll round trip, and fewer
// rounds win when a step has few items or the link is busy.
template <int R>
constexpr int snt_reduce_batch() { return R == 4 ? 2 : 4; }

// The rank-order sums of units idx[i] (live[i]) of this rank's shard: peer
// r's unit at slot0[peer_slot(r, me) * slot_stride + idx[i]] in the local
// region (own[i] for this rank). At 4 ranks every peer's units are polled
// in one batch (one round trip; 4x H200 measured the reduce, not the norm,
// setting the fused two-shot's pace), at 8 a rank at a time (a batch of 32
// units would not stay in registers). Either way the fp32 accumulation
// runs in rank order exactly as sum_in_rank_order does; every unit read is
// cleared. False (sums NaN) if any never arrived.
template <typename T, int U, int R>
__device__ __forceinline__ bool snt_sum_units(uint4* slot0, size_t slot_stride, const size_t (&idx)[U],
                                              const bool (&live)[U], const uint4 (&own)[U], int me, int world,
                                              const PollWait& wait, uint4 (&sum)[U]) {
  constexpr int K = static_cast<int>(kSntUnitBytes / sizeof(T));
  constexpr bool kOneBatch = R == 4;  // (R = 2: one peer, a batch either way)
  constexpr int kRanksPerBatch = kOneBatch ? R : 1;
  float acc[U][K];
  bool ok = true;
  auto at_of = [&](int r, int i) { return slot0 + peer_slot(r, me) * slot_stride + idx[i]; };
#pragma unroll
  for (int r0 = 0; r0 < R; r0 += kRanksPerBatch) {
    if (r0 >= world) break;
    // Units of ranks [r0, r0 + kRanksPerBatch): entry j = (r - r0) * U + i.
    constexpr int B = kRanksPerBatch * U;
    bool poll[B];
    int peer[B];
    uint4 d[B];
#pragma unroll
    for (int j = 0; j < B; ++j) {
      const int r = r0 + j / U, i = j % U;
      poll[j] = live[i] && r < world && r != me;
      peer[j] = r;
    }
    // Addresses recomputed per fetch rather than kept: B pointers would not
    // fit the movers' registers next to the data.
    ok = poll_batch(
             poll, peer, wait, d, [&](int j) { return snt_fetch(at_of(r0 + j / U, j % U)); },
             [](const uint4& x) { return snt_ready<T>(x); }) &&
         ok;
#pragma unroll
    for (int j = 0; j < B; ++j) {
      const int r = r0 + j / U, i = j % U;
      if (r >= world) continue;
      const uint4 v = r == me ? own[i] : d[j];  // a value, not a pointer: both arrays stay in registers
      const T* t = reinterpret_cast<const T*>(&v);
#pragma unroll
      for (int k = 0; k < K; ++k) acc[i][k] = r == 0 ? Num<T>::to_float(t[k]) : acc[i][k] + Num<T>::to_float(t[k]);
    }
  }
#pragma unroll
  for (int i = 0; i < U; ++i) {
    Pack<T, K> out = nan_pack<T, K>();
    if (ok) {
#pragma unroll
      for (int k = 0; k < K; ++k) out.v[k] = Num<T>::from_float(acc[i][k]);
    }
    sum[i] = *reinterpret_cast<const uint4*>(&out);
  }
  if (ok) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= world || r == me) continue;
#pragma unroll
      for (int i = 0; i < U; ++i)
        if (live[i]) snt_clear(at_of(r, i));
    }
  }
  return ok;
}

// TWO-SHOT FUSED over sentinel units (sentinel.cuh), for calls above the LL
// sizes and rows wider than a cluster holds. CTA b owns rows [r0, r1) and
// runs two groups of warps at once, which share nothing but the sentinel
// units they exchange through memory:
//   movers (kFusedMoverThreads threads) move the rows G at a time
//     (fused_rows_per_step); in step k they
//       A. push the rows of step k: unit u of a row goes to its shard's owner
//          j = u / su, into RS(row, me) on rank j (peers in turn from me + 1,
//          so the CTAs of all ranks spread over the links);
//       B. reduce the rows of step k - lag: poll RS(row, r) of every peer for
//          the units of this rank's shard, sum in rank order with the own
//          input, push the rounded sums into AG(row) on every rank (this one
//          too);
//   the epilogue (kThreadsPerBlock threads, named barrier kEpilogueBarrier)
//     takes the CTA's rows in order, each as soon as AG(row) is complete.
// So a row's epilogue (loads, the row reduction, stores: latency-bound)
// overlaps the NVLink traffic of later rows instead of taking turns with
// it, and each group's code keeps its registers to itself.
// Data region of parity e (fused_region_bytes): row slots. CTA b's i-th row
// uses slot t = b * S + i % S (S = ring_slots; t = row when S covers the
// CTA's rows); RS(t, src) at (t * P + peer_slot(src, me)) * su units,
// P = peer_slots(world) (a rank sends itself nothing); AG(t) at
// ring_total * P * su + t * world * su (shard j at j * su within the row).
// What travels in the all-gather is the rounded sums s, not normalised rows:
// one activation per element, against two (h and y) otherwise; every rank
// then recomputes the epilogue, which costs local bandwidth only.
// Deadlock freedom: every wait of a mover in its iteration k needs only work
// done in iterations before k: pushes of steps up to k - lag, and with a
// ring the reduces and epilogues of rows at least S back, published every
// Q rows (S >= lag G + Q, plan_fused_ring_publish: a published count trails
// the truth by less than Q); the epilogue waits only for movers; every
// active CTA is resident (one per SM). Every rank agrees on lag (checked at
// creation), so all take the ring or all take chunks.
// kOneShot (2 ranks, FusedRoute::pipelined): the ONE-SHOT over this
// pipeline. The movers push whole rows of step k into AG(row) on the peer
// (2 su units hold a row) and reduce nothing; the epilogue sums each unit
// it polls there with its own input (SntRowSums with kAddOwn). At two ranks that
// moves the same bytes over NVLink as the two-shot (S out of each GPU) in
// one hop instead of two, with no reduce between them, and the movers do
// nothing but push. A mover's ring wait is then on the peer's epilogue
// (word 1), which needs only pushes of earlier steps: the argument above
// holds with lag 0. Its op code is its own (kOpFusedOneShotPipelined), so
// errors name the route and a timing build keeps its marks apart.
constexpr int kEpilogueBarrier = 1;
constexpr int kMoverBarrier = 2;

// kGroups: rows the epilogue takes at once (FusedParams::epilogue_groups;
// its own instance, as one kernel holding both loops spilled 100-230 bytes
// where either alone spills 30).
// kRing: the instance serves calls whose rows take the ring (slots fewer
// than a CTA's rows); without it the ring's waits, publications and slot
// arithmetic are compiled out (smaller code for the calls that fit the
// region, which are the latency-bound ones). The launch picks it from
// FusedParams (fused_select.cuh); every call gives the same bits either way.
template <typename T, typename W, bool kVec, int R, int kGroups = 1, bool kRing = true, bool kOneShot = false>
__global__ void __launch_bounds__(kFusedTwoShotThreads, 1) fused_twoshot_kernel(FusedParams p) {
  pdl_begin();
  const long long t0 = PhaseClock::now();  // (mark 0: before the loads, as before op_read)
  const CallRead read = op_read(p.sync);    // EPOCH: issued first, completed by op_begin
  const SyncParams& s = p.sync;
  const CallStart call = op_begin(read);
  const uint64_t e = call.e;
  // PHASE CLOCK: epilogue thread 0 and mover thread 0 (marks in phase_clock.cuh).
  constexpr uint32_t kMoverMarks = 1u << 2 | 1u << 3 | 1u << 5;
  const PhaseClock clock(s, e, t0, 0, kAllPhaseMarks & ~kMoverMarks);
  const PhaseClock mover_clock(s, e, t0, kThreadsPerBlock, kMoverMarks);
  clock.mark(1);
  const int me = s.rank, world = s.world;
  const size_t H = p.hidden;
  const size_t ru = fused_row_units(H, sizeof(T)), su = fused_shard_units(H, sizeof(T), world);
  const size_t stride = static_cast<size_t>(world) * su;  // AG row
  const size_t rs_stride = peer_slots(world) * su;         // RS row
  const size_t ag0 = p.ring_total * rs_stride;             // AG(slot 0)
  const size_t r0 = min(p.rows, blockIdx.x * p.rows_per_cta), r1 = min(p.rows, r0 + p.rows_per_cta);
  // Row slots: the i-th row of this CTA uses slot slot0 + i % S. With S at
  // least the CTA's rows, slot = row (no slot is reused); otherwise slots
  // are reused once RING PROGRESS says every reader is done with them.
  const size_t S = p.ring_slots, slot0 = blockIdx.x * S;
  const bool ring = kRing && r1 - r0 > S;
  // Local row i's slot offset: i % S, which is i itself without a ring.
  auto slot_of = [&](size_t i) { return kRing ? i % S : i; };
  const PollWait wait = poll_wait_of(s, call);
  uint4* local = snt_region<R>(s, me, e);
  const size_t G = fused_rows_per_step(H, sizeof(T));
  // Rows of [r0, r1) whose epilogue is done: epilogue thread 0 raises it,
  // the movers read it (shared-memory atomics: a counter, not data).
  __shared__ uint32_t epilogue_done;
  // A ring wait of the movers gave up: they push nothing more (readers then
  // time out and report, as for any missing data).
  __shared__ uint32_t movers_failed;
  if (threadIdx.x == 0) epilogue_done = movers_failed = 0;
  __syncthreads();

  if (threadIdx.x < kThreadsPerBlock) {
    // Epilogue warps.
    PollWait ag_wait = wait;  // twice the timeout, as in the plain two-shot
    ag_wait.timeout_ns *= 2;
    // The CTA's rows in order, kGroups at a time (ROW GROUPS,
    // rmsnorm_row): with two, a row's serial latency (loads, the row sum's
    // barriers, stores) is paid once per pair. Rows come G at a time from
    // the movers, G even whenever pairs are chosen (fused_epilogue_groups, plan.h),
    // so a pair never waits on a later step than its first row. A CTA with
    // one row leaves the second group idle.
    constexpr int kRowThreads = kThreadsPerBlock / kGroups;
    const size_t group = threadIdx.x / kRowThreads;
    for (size_t first = r0; first < r1; first += kGroups) {
      const size_t row = first + group;
      const RowEpilogue ep = row_epilogue<T>(p, row);
      bool ok = true;
      if (row < r1) {
        uint4* const gathered = local + ag0 + (slot0 + slot_of(row - r0)) * stride;
        using Sums = SntRowSums<T, kRowThreads, kOneShot, kVec>;
        const Sums sums{gathered, ru, su, ag_wait, static_cast<const T*>(p.in) + row * H, H, me == 0 ? 1 : 0};
        ok = rmsnorm_row<T, W, kVec, Sums, kEpilogueBarrier, kRowThreads>(ep, sums);
      } else {
        // No row for this group (an odd last one): it still takes part in
        // the two barriers of the row sum (one round: kGroups > 1 only
        // where a row fits one).
        const float none[kGroups] = {};
        group_sum<kEpilogueBarrier, kRowThreads>(none);
      }
      // (row_any is a barrier of the epilogue threads: every clear of
      // these rows' gathered units is ordered before thread 0's publish.
      // A failed row poisons its pair too: the call fails either way.)
      if (row_any<kEpilogueBarrier>(!ok) && row < r1) poison_row<T, kRowThreads>(ep);
      if (first == r0) clock.mark(6);
      if (threadIdx.x == 0) {
        const size_t done = min(r1, first + kGroups) - r0;
        atomicExch(&epilogue_done, static_cast<uint32_t>(done));
        // Every rank's movers write this rank's gathered sums. (done
        // steps by kGroups, which divides ring_publish.)
        if (ring && (done % p.ring_publish == 0 || done == r1 - r0))
          publish_progress<R>(s, 1, blockIdx.x, progress_value(e, done), [](int) { return true; });
      }
    }
    clock.mark(7);
  } else {
    // Mover warps.
    const uint32_t mt = threadIdx.x - kThreadsPerBlock;
    const size_t own_lo = min(ru, me * su), own_hi = min(ru, own_lo + su), own_n = own_hi - own_lo;
    const size_t steps = ceil_div(r1 - r0, G), lag = kOneShot ? 0 : p.lag;
    // BACKPRESSURE: the movers push a step only while it is at most
    // lead rows past the epilogue, which bounds how long a written unit
    // waits for its reader (meant to keep it in L2 until then; on 2x H200
    // every ahead from 2 to 64 measured alike, ahead 1 slower).
    // lead >= (lag + 1) G keeps the movers free to reduce every row the
    // epilogue waits for, so this wait never closes a cycle.
    const size_t lead = (lag + static_cast<size_t>(p.ahead)) * G;
    // Rows [first, last) of step i.
    auto first_of = [&](size_t i) { return min(r1, r0 + i * G); };
    const T* in = static_cast<const T*>(p.in);
    const size_t parity = s.layout.data_parity_offset(e);
    // Rank r's data region (r compile-time: the base stays a kernel parameter).
    auto region = [&](int r) { return reinterpret_cast<uint4*>(s.ws[r] + parity); };
    auto mover_sync = [] { asm volatile("bar.sync %0, %1;" ::"n"(kMoverBarrier), "n"(kFusedMoverThreads) : "memory"); };
    // Global slot of the q-th row of a step whose first row has local slot
    // sa = (first local row) % S (q < G <= S: at most one wrap).
    auto slot_at = [&](size_t sa, size_t q) {
      const size_t sl = sa + q;
      return slot0 + (sl >= S ? sl - S : sl);
    };
    // RING PROGRESS acquire: before rows [ia, ia + n) of this CTA take their
    // slots, every rank r in `who` has consumed (word `which`) the rows that
    // used them last, rows below ia + n - S.
    // Thread 0 keeps the last value it saw of each word and reads a word
    // again only when that is short of the target. Timeouts: word 0 waits on
    // reduces that poll with the call's timeout, word 1 on epilogues that
    // poll with twice it, so each waits longer than what it waits on and the
    // rank that is really missing is the one named.
    __shared__ uint64_t ring_seen[2][kMaxRanks];
    if constexpr (kRing) {
      if (mt < 2 * kMaxRanks) ring_seen[mt / kMaxRanks][mt % kMaxRanks] = 0;
      mover_sync();
    }
    auto ring_wait = [&](size_t ia, size_t n, int which, auto who) {
      if (!ring || ia + n <= S) return;
      if (mt == 0) {
        const uint64_t target = progress_value(e, ia + n - S);
        PollWait w = wait;
        w.timeout_ns *= which == 0 ? 2 : 3;
        for (int r = 0; r < world; ++r) {
          if (!who(r) || ring_seen[which][r] >= target) continue;
          const uint64_t* word = progress_word<R>(s, me, which, r, blockIdx.x);
          if (wait_progress(word, r, target, w)) ring_seen[which][r] = load_acquire_sys(word);
          else movers_failed = 1;
        }
      }
      mover_sync();
    };
    for (size_t k = 0; k < steps + lag; ++k) {
      // A. push
      if (k < steps && !call.aborted) {
        const size_t ra = first_of(k), nrows = first_of(k + 1) - ra;
        while (ra + nrows - r0 > atomicOr(&epilogue_done, 0u) + lead) __nanosleep(100);
        // Two-shot: reduce-scatter slots on every peer with a shard, which
        // the peers' movers consume. One-shot: whole rows into the peer's
        // gathered-row slots, which its epilogue consumes.
        if constexpr (kOneShot) {
          ring_wait(ra - r0, nrows, 1, [&](int r) { return r != me; });
        } else {
          ring_wait(ra - r0, nrows, 0, [&](int r) { return r != me && min(ru, r * su) < ru; });
        }
        const size_t sa = slot_of(ra - r0);
        const size_t dst_stride = kOneShot ? stride : rs_stride;
        for (int t = 1; t < world && !movers_failed; ++t) {
          const int r = me + t < world ? me + t : me + t - world;
          const size_t a = kOneShot ? 0 : min(ru, r * su), n = kOneShot ? ru : min(ru, a + su) - a;
          uint4* dst =
              reinterpret_cast<uint4*>(workspace_of<R>(s, r) + parity) + (kOneShot ? ag0 : peer_slot(me, r) * su);
          // Item i: unit a + i % n of row ra + i / n (32-bit: a step holds
          // fewer than 2^32 units).
          const uint32_t n32 = static_cast<uint32_t>(n);
          for_packs_strided<kCopyUnroll, uint4>(
              0, nrows * n, mt, kFusedMoverThreads,
              [&](size_t i) {
                const uint32_t q = static_cast<uint32_t>(i) / n32, m = static_cast<uint32_t>(i) - q * n32;
                return load_unit<T, kVec>(in + (ra + q) * H, a + m, H);
              },
              [&](size_t i, const uint4& d) {
                const uint32_t q = static_cast<uint32_t>(i) / n32, m = static_cast<uint32_t>(i) - q * n32;
                snt_store<T>(dst + slot_at(sa, q) * dst_stride + m, d);
              });
        }
      }
      // B. reduce (two-shot only)
      if (!kOneShot && k >= lag && own_n > 0) {
        const size_t ra = first_of(k - lag), nrows = first_of(k - lag + 1) - ra, items = nrows * own_n;
        // All-gather slots on every rank, this one included.
        ring_wait(ra - r0, nrows, 1, [](int) { return true; });
        const size_t sa = slot_of(ra - r0);
        constexpr int kSntReduceBatch = snt_reduce_batch<R>();
        for (size_t i0 = mt; i0 < items; i0 += kSntReduceBatch * kFusedMoverThreads) {
          size_t idx[kSntReduceBatch], ag[kSntReduceBatch];
          bool live[kSntReduceBatch];
          uint4 own[kSntReduceBatch], sum[kSntReduceBatch];
#pragma unroll
          for (int b = 0; b < kSntReduceBatch; ++b) {
            const uint32_t i = static_cast<uint32_t>(i0 + b * kFusedMoverThreads), q = i / static_cast<uint32_t>(own_n);
            const size_t row = ra + q, u = own_lo + (i - q * own_n), slot = slot_at(sa, q);
            live[b] = i < items;
            idx[b] = slot * rs_stride + (u - own_lo);  // RS(slot, r) unit at local[peer_slot(r, me) * su + idx]
            ag[b] = ag0 + slot * stride + u;
            if (live[b]) own[b] = load_unit<T, kVec>(in + row * H, u, H);
          }
          const bool ok = snt_sum_units<T, kSntReduceBatch, R>(local, su, idx, live, own, me, world, wait, sum);
          // A sum that failed is never published (its readers time out).
          if (ok && !call.aborted && !movers_failed) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
              if (r >= world) continue;
#pragma unroll
              for (int b = 0; b < kSntReduceBatch; ++b)
                if (live[b]) snt_store<T>(region(r) + ag[b], sum[b]);
            }
          }
        }
        // RING PROGRESS release: this step's reduce-scatter slots are read
        // and cleared by every mover; the peers write them.
        const size_t done = ra + nrows - r0, Q = p.ring_publish;
        if (ring && (done / Q != (done - nrows) / Q || ra + nrows == r1)) {
          mover_sync();
          if (mt == 0) publish_progress<R>(s, 0, blockIdx.x, progress_value(e, done), [&](int r) { return r != me; });
        }
      }
      if (k == 0) mover_clock.mark(2);
      if (k == lag) mover_clock.mark(3);
    }
    mover_clock.mark(5);
  }
  op_end(s, e);  // thread 0 (an epilogue thread); no barrier needed (EPOCH)
  clock.mark(11);
}

// The norm after an NCCL all-reduce: the sums are in `in` (rounded by NCCL).
template <typename T, typename W, bool kVec>
__global__ void __launch_bounds__(kThreadsPerBlock) add_rmsnorm_kernel(FusedParams p) {
  for (size_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const T* srow = static_cast<const T*>(p.in) + row * p.hidden;
    rmsnorm_row<T, W, kVec>(row_epilogue<T>(p, row),
                            loaded_sums([&](size_t v, float* sum) { load_v8<T, kVec>(srow, v, p.hidden, sum); }));
  }
}

}  // namespace arnorm
