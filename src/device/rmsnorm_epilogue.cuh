// The residual-add + RMSNorm epilogue of one row, shared by every fused
// kernel (one-shot, two-shot, and the norm after NCCL), so a row's result
// does not depend on the algorithm, the batch it came in, or its position.
//
// Invariant (batch invariance): the only reduction whose order could vary is
// the row's sum of squares. Its order is a function of the hidden size alone:
// element i belongs to virtual pack v = i / 8; q_v is the fma chain of the
// pack's 8 squares from 0 in increasing i; virtual thread t (of
// kThreadsPerBlock) folds q_t, q_{t+256}, q_{t+512}, ... in that order from 0
// with round-to-nearest adds; warps combine the virtual threads' totals by an
// xor butterfly (every lane ends with the same value) and warp totals are
// added in warp order (group_sum). A kernel may compute the q_v anywhere
// (rmsnorm_row in one CTA, the split epilogue across a thread-block cluster)
// as long as it folds them in this order. Vector and scalar loads only change
// how the 8 elements of a pack are fetched, never this order.
#pragma once

#include "core/plan.h"
#include "device/pack.cuh"

namespace arnorm {

constexpr int kRowVec = 8;  // elements per virtual pack

// Loads the 8 elements of virtual pack `v` of a row (bounded by `hidden` on
// the scalar path; on the vector path hidden is a multiple of 8 and the row
// 16-byte aligned). `cg` loads through L2 only (data written by peers).
template <typename T, bool kVec, bool kCg = false>
__device__ __forceinline__ void load_v8(const T* row, size_t v, size_t hidden, float* f) {
  if constexpr (kVec) {
    constexpr int kPer = static_cast<int>(kVectorBytes / sizeof(T));  // elements per 16-byte access
#pragma unroll
    for (int a = 0; a < kRowVec / kPer; ++a) {
      Pack<T, kPer> p;
      if constexpr (kCg) p = load_cg<T, kPer>(row + v * kRowVec, a);
      else p = reinterpret_cast<const Pack<T, kPer>*>(row + v * kRowVec)[a];
#pragma unroll
      for (int i = 0; i < kPer; ++i) f[a * kPer + i] = Num<T>::to_float(p.v[i]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kRowVec; ++i) {
      const size_t e = v * kRowVec + i;
      f[i] = e < hidden ? Num<T>::to_float(kCg ? load_cg<T, 1>(row, e).v[0] : row[e]) : 0.f;
    }
  }
}

// The 8 elements of virtual pack `v` as stored (zeros past `hidden`), for a
// value held in registers until it is used: 16 bytes of bf16 or fp16 take
// half the registers of their floats, and converting later gives the same
// floats (every conversion to fp32 is exact).
template <typename T, bool kVec>
__device__ __forceinline__ Pack<T, kRowVec> load_raw8(const T* row, size_t v, size_t hidden) {
  Pack<T, kRowVec> r;
  if constexpr (kVec) {
    constexpr int kPer = static_cast<int>(kVectorBytes / sizeof(T));
#pragma unroll
    for (int a = 0; a < kRowVec / kPer; ++a)
      reinterpret_cast<Pack<T, kPer>*>(r.v)[a] = reinterpret_cast<const Pack<T, kPer>*>(row + v * kRowVec)[a];
  } else {
#pragma unroll
    for (int i = 0; i < kRowVec; ++i) {
      const size_t e = v * kRowVec + i;
      r.v[i] = e < hidden ? row[e] : Num<T>::from_float(0.f);
    }
  }
  return r;
}

// Rounds 8 floats to T and stores those below `hidden`.
template <typename T, bool kVec>
__device__ __forceinline__ void store_v8(T* row, size_t v, size_t hidden, const float* f) {
  if constexpr (kVec) {
    constexpr int kPer = static_cast<int>(kVectorBytes / sizeof(T));
#pragma unroll
    for (int a = 0; a < kRowVec / kPer; ++a) {
      Pack<T, kPer> p;
#pragma unroll
      for (int i = 0; i < kPer; ++i) p.v[i] = Num<T>::from_float(f[a * kPer + i]);
      reinterpret_cast<Pack<T, kPer>*>(row + v * kRowVec)[a] = p;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kRowVec; ++i) {
      const size_t e = v * kRowVec + i;
      if (e < hidden) row[e] = Num<T>::from_float(f[i]);
    }
  }
}

// A pack of T to fp32 and back (exact both ways for values of T).
template <typename T>
__device__ __forceinline__ void to_floats(const Pack<T, kRowVec>& p, float* f) {
#pragma unroll
  for (int i = 0; i < kRowVec; ++i) f[i] = Num<T>::to_float(p.v[i]);
}
template <typename T>
__device__ __forceinline__ Pack<T, kRowVec> to_pack(const float* f) {
  Pack<T, kRowVec> p;
#pragma unroll
  for (int i = 0; i < kRowVec; ++i) p.v[i] = Num<T>::from_float(f[i]);
  return p;
}

template <typename T>
__device__ __forceinline__ float round_to(float x) {
  return Num<T>::to_float(Num<T>::from_float(x));
}

// The threads of a row epilogue are threads [0, kThreadsPerBlock) of the
// CTA. They synchronise on barrier kBarrier: 0 is __syncthreads (the CTA is
// only those threads); another id is a named barrier of those threads alone,
// for CTAs that also run other warps (the fused two-shot's movers), which
// never take part in it.
template <int kBarrier>
__device__ __forceinline__ void row_sync() {
  if constexpr (kBarrier == 0) {
    __syncthreads();
  } else {
    asm volatile("bar.sync %0, %1;" ::"n"(kBarrier), "n"(kThreadsPerBlock) : "memory");
  }
}

// True on every epilogue thread if `v` is on any (a barrier like row_sync).
template <int kBarrier>
__device__ __forceinline__ bool row_any(bool v) {
  if constexpr (kBarrier == 0) {
    return __syncthreads_or(v);
  } else {
    unsigned r;
    asm volatile(
        "{\n\t.reg .pred p;\n\tsetp.ne.u32 p, %1, 0;\n\tbar.red.or.pred p, %2, %3, p;\n\tselp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(r)
        : "r"(static_cast<unsigned>(v)), "n"(kBarrier), "n"(kThreadsPerBlock)
        : "memory");
    return r != 0;
  }
}

// Deterministic CTA-wide sum (see the invariant above), and whether `flag`
// is set on any thread, in the same two barriers. Every thread gets both.
template <int kBarrier = 0>
__device__ __forceinline__ float block_sum_any(float v, bool* flag) {
  __shared__ float warp_total[kThreadsPerBlock / 32];
  __shared__ int warp_flag[kThreadsPerBlock / 32];
  const int f = __any_sync(0xffffffffu, *flag);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) {
    warp_total[threadIdx.x >> 5] = v;
    warp_flag[threadIdx.x >> 5] = f;
  }
  row_sync<kBarrier>();
  float t = warp_total[0];
  int any = warp_flag[0];
#pragma unroll
  for (int w = 1; w < kThreadsPerBlock / 32; ++w) {
    t = __fadd_rn(t, warp_total[w]);
    any |= warp_flag[w];
  }
  row_sync<kBarrier>();  // warp_total may be reused by the next row
  *flag = any != 0;
  return t;
}

// The same sum for kThreadsPerBlock / kRowThreads rows side by side, a
// group of kRowThreads consecutive threads per row (ROW GROUPS): thread p of
// a group stands for virtual threads j * kRowThreads + p (j < J) and passes
// their folds in v[j]; the virtual warp of each is reduced by the same xor
// butterfly, and the eight virtual warp totals of each row are added in
// order. So a row gets the same bits whichever group size computed it. All
// groups pass the same two barriers (kBarrier, every epilogue thread).
template <int kBarrier, int kRowThreads, int J = kThreadsPerBlock / kRowThreads>
__device__ __forceinline__ float group_sum(const float (&v)[J]) {
  static_assert(kRowThreads % 32 == 0 && J * kRowThreads == kThreadsPerBlock, "row groups of whole warps");
  constexpr int kVirtualWarps = kThreadsPerBlock / 32, kWarps = kRowThreads / 32;
  __shared__ float totals[J][kVirtualWarps];
  const int group = threadIdx.x / kRowThreads, warp = (threadIdx.x % kRowThreads) >> 5;
#pragma unroll
  for (int j = 0; j < J; ++j) {
    float t = v[j];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t = __fadd_rn(t, __shfl_xor_sync(0xffffffffu, t, o));
    if ((threadIdx.x & 31) == 0) totals[group][j * kWarps + warp] = t;
  }
  row_sync<kBarrier>();
  float t = totals[group][0];
#pragma unroll
  for (int w = 1; w < kVirtualWarps; ++w) t = __fadd_rn(t, totals[group][w]);
  row_sync<kBarrier>();  // totals may be reused by the next row
  return t;
}

// q_v of the invariant above: the fma chain of a pack's squares from 0.
__device__ __forceinline__ float pack_squares(const float* h) {
  float q = 0.f;
#pragma unroll
  for (int i = 0; i < kRowVec; ++i) q = __fmaf_rn(h[i], h[i], q);
  return q;
}

struct RowEpilogue {
  const void* residual;  // row start or nullptr
  void* residual_out;    // row start or nullptr
  const void* weight;    // gamma, hidden elements
  void* out;             // row start
  size_t hidden;
  float eps;
};

// Virtual packs per thread held in registers: rows of up to
// kRowRegs * kThreadsPerBlock * 8 elements (8192) keep h in registers
// between the two passes, and every load of a pass is issued before any is
// used. Wider rows take several rounds and re-read h from memory. Both give
// the same bits: the order of every operation is the same.

// Where rmsnorm_row gets the row's rounded sums. Each round covers virtual
// packs v0 + k * kRowThreads (k < kRowRegs) of the calling thread.
// ready(v0) is called once per round after the round's residual and weight
// loads are issued, so a source that must wait for peers (LL) overlaps that
// wait with them; it returns false if the sums will never come. sum_at(v, f)
// then yields the 8 sums of virtual pack v, already rounded to T. A source
// with kFetchesRound instead fills a whole round at once (fetch_round(v0,
// nv, h)), so that data it polled need not be read twice.
template <typename F>
struct LoadedSums {
  static constexpr bool kFetchesRound = false;
  F load;  // (v, float* f): the sums are in memory already
  __device__ __forceinline__ bool ready(size_t) const { return true; }
  __device__ __forceinline__ void sum_at(size_t v, float* f) const { load(v, f); }
};
template <typename F>
__device__ __forceinline__ LoadedSums<F> loaded_sums(F f) {
  return LoadedSums<F>{f};
}

// One row: s (from `sums`) -> h = round(s + residual) -> residual_out, then
// y = round(h * rsqrt(mean(h^2) + eps) * gamma) -> out. Returns false (on the
// threads concerned) if a source's ready() failed; the caller poisons the row.
// Rows wider than one round keep h in residual_out, or in out when there is
// none; each thread re-reads only elements it wrote itself, so no barrier is
// needed between the passes beyond the one inside group_sum. Threads
// [0, kThreadsPerBlock) call it, synchronising on barrier kBarrier (row_sync).
// With kRowThreads < kThreadsPerBlock they work on kThreadsPerBlock /
// kRowThreads rows at once, a group of kRowThreads threads each (ROW GROUPS,
// group_sum: the same bits); sums sources that fetch a round then poll with
// that stride (Sums::kRowStride).
template <typename T, typename W, bool kVec, typename Sums, int kBarrier = 0, int kRowThreads = kThreadsPerBlock>
__device__ __forceinline__ bool rmsnorm_row(const RowEpilogue& r, const Sums& sums) {
  constexpr int J = kThreadsPerBlock / kRowThreads;  // virtual threads per thread
  if constexpr (J > 1) static_assert(Sums::kRowStride == kRowThreads, "the sums source polls the group's packs");
  const uint32_t lane = threadIdx.x % kRowThreads;
  const T* res = static_cast<const T*>(r.residual);
  T* h_row = static_cast<T*>(r.residual_out ? r.residual_out : r.out);
  const W* gamma = static_cast<const W*>(r.weight);
  const size_t nv = ceil_div(r.hidden, static_cast<size_t>(kRowVec));
  const size_t per_round = static_cast<size_t>(kRowRegs) * kRowThreads;
  const bool one_round = nv <= per_round;
  // h is held as T: every h is a T value (a rounded sum, or the rounded sum
  // plus residual), so the conversions to fp32 where it is used are exact,
  // and the row takes half the registers at 16-bit widths. Gamma and the
  // residual likewise stay at their own width until used.
  Pack<T, kRowVec> h[kRowRegs];
  Pack<W, kRowVec> g[kRowRegs];
  // Pack v belongs to virtual thread v % kThreadsPerBlock, which this thread
  // folds in ss[(v / kRowThreads) % J] = ss[u % J] (a round spans whole
  // multiples of kThreadsPerBlock), packs in increasing order.
  float ss[J];
#pragma unroll
  for (int j = 0; j < J; ++j) ss[j] = 0.f;
  bool ok = true;
  for (size_t v0 = lane; v0 < nv; v0 += per_round) {
    Pack<T, kRowVec> x[kRowRegs];
    if (res) {
#pragma unroll
      for (int u = 0; u < kRowRegs; ++u)
        if (v0 + u * kRowThreads < nv) x[u] = load_raw8<T, kVec>(res, v0 + u * kRowThreads, r.hidden);
    }
    if (one_round) {
#pragma unroll
      for (int u = 0; u < kRowRegs; ++u)
        if (v0 + u * kRowThreads < nv) g[u] = load_raw8<W, kVec>(gamma, v0 + u * kRowThreads, r.hidden);
    }
    if constexpr (Sums::kFetchesRound) {
      ok = sums.fetch_round(v0, nv, h) && ok;
    } else {
      ok = sums.ready(v0) && ok;
#pragma unroll
      for (int u = 0; u < kRowRegs; ++u) {
        if (v0 + u * kRowThreads >= nv) continue;
        float f[kRowVec];
        sums.sum_at(v0 + u * kRowThreads, f);
        h[u] = to_pack<T>(f);
      }
    }
    if (res) {
#pragma unroll
      for (int u = 0; u < kRowRegs; ++u)
#pragma unroll
        for (int i = 0; i < kRowVec; ++i)
          h[u].v[i] = Num<T>::from_float(__fadd_rn(Num<T>::to_float(h[u].v[i]), Num<T>::to_float(x[u].v[i])));
    }
#pragma unroll
    for (int u = 0; u < kRowRegs; ++u) {
      const size_t v = v0 + u * kRowThreads;
      if (v >= nv) continue;
      float f[kRowVec];
      to_floats(h[u], f);
      ss[u % J] = __fadd_rn(ss[u % J], pack_squares(f));  // lanes past hidden hold 0
      if (!one_round || r.residual_out) store_v8<T, kVec>(h_row, v, r.hidden, f);
    }
  }
  // Explicit _rn operations: no contraction into FMAs that could differ
  // between the kernels this function is inlined into.
  const float scale = rsqrtf(__fadd_rn(__fdiv_rn(group_sum<kBarrier, kRowThreads>(ss), static_cast<float>(r.hidden)), r.eps));
  if (one_round) {
#pragma unroll
    for (int u = 0; u < kRowRegs; ++u) {
      const size_t v = lane + u * kRowThreads;
      if (v >= nv) continue;
      float y[kRowVec];
#pragma unroll
      for (int i = 0; i < kRowVec; ++i) y[i] = __fmul_rn(__fmul_rn(Num<T>::to_float(h[u].v[i]), scale), Num<W>::to_float(g[u].v[i]));
      store_v8<T, kVec>(static_cast<T*>(r.out), v, r.hidden, y);
    }
    return ok;
  }
  for (size_t v = lane; v < nv; v += kRowThreads) {
    float y[kRowVec], gv[kRowVec];
    load_v8<T, kVec>(h_row, v, r.hidden, y);
    load_v8<W, kVec>(gamma, v, r.hidden, gv);
#pragma unroll
    for (int i = 0; i < kRowVec; ++i) y[i] = __fmul_rn(__fmul_rn(y[i], scale), gv[i]);
    store_v8<T, kVec>(static_cast<T*>(r.out), v, r.hidden, y);
  }
  return ok;
}

// A row of NaN in out and residual_out: what a call that lost a peer leaves.
// (kRowThreads: as rmsnorm_row.)
template <typename T, int kRowThreads = kThreadsPerBlock>
__device__ __forceinline__ void poison_row(const RowEpilogue& r) {
  const T nan = Num<T>::from_float(__int_as_float(0x7fc00000));
  for (size_t i = threadIdx.x % kRowThreads; i < r.hidden; i += kRowThreads) {
    static_cast<T*>(r.out)[i] = nan;
    if (r.residual_out) static_cast<T*>(r.residual_out)[i] = nan;
  }
}

}  // namespace arnorm
