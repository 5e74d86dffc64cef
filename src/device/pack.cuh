// Element types and packs: P consecutive elements moved as one access (16
// bytes on the vector path, one element otherwise), and the fp32 arithmetic
// every kernel shares.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "arnorm/arnorm.h"
#include "core/workspace_layout.h"

namespace arnorm {

template <typename T>
struct Num;
template <>
struct Num<float> {
  __device__ static float to_float(float x) { return x; }
  __device__ static float from_float(float x) { return x; }
};
template <>
struct Num<__half> {
  __device__ static float to_float(__half x) { return __half2float(x); }
  __device__ static __half from_float(float x) { return __float2half_rn(x); }
};
template <>
struct Num<__nv_bfloat16> {
  __device__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};

template <typename T, int P>
struct alignas(sizeof(T) * P) Pack {
  T v[P];
};

// Raw load through L2 only (data written by peers must not come from L1).
template <typename T, int P>
__device__ __forceinline__ Pack<T, P> load_cg(const T* base, size_t pack) {
  static_assert(sizeof(Pack<T, P>) == 16 || sizeof(Pack<T, P>) == 4 || sizeof(Pack<T, P>) == 2, "pack size");
  Pack<T, P> r;
  const Pack<T, P>* src = reinterpret_cast<const Pack<T, P>*>(base) + pack;
  if constexpr (sizeof(Pack<T, P>) == 16) {
    int4 raw = __ldcg(reinterpret_cast<const int4*>(src));
    r = *reinterpret_cast<Pack<T, P>*>(&raw);
  } else if constexpr (sizeof(Pack<T, P>) == 4) {
    unsigned raw = __ldcg(reinterpret_cast<const unsigned*>(src));
    r = *reinterpret_cast<Pack<T, P>*>(&raw);
  } else {
    unsigned short raw = __ldcg(reinterpret_cast<const unsigned short*>(src));
    r = *reinterpret_cast<Pack<T, P>*>(&raw);
  }
  return r;
}

// Pack `pack` of a caller buffer of n elements; lanes past n read as zero.
template <typename T, int P>
__device__ __forceinline__ Pack<T, P> load_bounded(const T* base, size_t pack, size_t n) {
  const size_t e0 = pack * P;
  if (e0 + P <= n) return reinterpret_cast<const Pack<T, P>*>(base)[pack];
  Pack<T, P> r;
#pragma unroll
  for (int i = 0; i < P; ++i) r.v[i] = e0 + i < n ? base[e0 + i] : Num<T>::from_float(0.f);
  return r;
}

// Stores the lanes of `pack` that fall below n.
template <typename T, int P>
__device__ __forceinline__ void store_bounded(T* base, size_t pack, size_t n, const Pack<T, P>& v) {
  const size_t e0 = pack * P;
  if (e0 + P <= n) {
    reinterpret_cast<Pack<T, P>*>(base)[pack] = v;
    return;
  }
#pragma unroll
  for (int i = 0; i < P; ++i)
    if (e0 + i < n) base[e0 + i] = v.v[i];
}

// Whole-pack store into a workspace slot (slots are padded to whole packs).
template <typename T, int P>
__device__ __forceinline__ void store_slot(T* base, size_t pack, const Pack<T, P>& v) {
  reinterpret_cast<Pack<T, P>*>(base)[pack] = v;
}

template <typename T, int P>
__device__ __forceinline__ Pack<T, P> nan_pack() {
  Pack<T, P> r;
#pragma unroll
  for (int i = 0; i < P; ++i) r.v[i] = Num<T>::from_float(__int_as_float(0x7fc00000));
  return r;
}

// The all-reduce sum: fp32, starting from rank 0's value, ranks in order,
// rounded once to T. Every kernel sums through this function, so one-shot
// and two-shot give the same bits.
template <typename T, int P, int R>
__device__ __forceinline__ Pack<T, P> sum_in_rank_order(const Pack<T, P>* v, int world) {
  float acc[P];
#pragma unroll
  for (int i = 0; i < P; ++i) acc[i] = Num<T>::to_float(v[0].v[i]);
#pragma unroll
  for (int r = 1; r < R; ++r) {
    if (r < world) {
#pragma unroll
      for (int i = 0; i < P; ++i) acc[i] += Num<T>::to_float(v[r].v[i]);
    }
  }
  Pack<T, P> out;
#pragma unroll
  for (int i = 0; i < P; ++i) out.v[i] = Num<T>::from_float(acc[i]);
  return out;
}

// Both transports move 16-byte units of a caller buffer's flat range.
constexpr size_t kUnitBytes = 16;

// Element-wise access to unit u (elements [u*K, u*K + K) below n) of a
// caller buffer. Out of line: on the vector path only a call's last, partial
// unit takes it, and inlined into every unrolled copy loop it made the hot
// code of small kernels several times larger (their time goes to fetching
// code: perf-notes, 0.5).
template <typename T>
__device__ __noinline__ uint4 load_unit_elementwise(const T* base, size_t u, size_t n) {
  constexpr int K = static_cast<int>(kUnitBytes / sizeof(T));
  Pack<T, K> p;
  const size_t e0 = u * K;
#pragma unroll
  for (int i = 0; i < K; ++i) p.v[i] = e0 + i < n ? base[e0 + i] : Num<T>::from_float(0.f);
  return *reinterpret_cast<const uint4*>(&p);
}

template <typename T>
__device__ __noinline__ void store_unit_elementwise(T* base, size_t u, size_t n, uint4 d) {
  constexpr int K = static_cast<int>(kUnitBytes / sizeof(T));
  const Pack<T, K>& p = *reinterpret_cast<const Pack<T, K>*>(&d);
  const size_t e0 = u * K;
#pragma unroll
  for (int i = 0; i < K; ++i)
    if (e0 + i < n) base[e0 + i] = p.v[i];
}

// Unit `u` (16 bytes) of a caller buffer of n elements; elements past n read
// as zero. kVec: the buffer is 16-byte aligned; otherwise element loads.
template <typename T, bool kVec>
__device__ __forceinline__ uint4 load_unit(const T* base, size_t u, size_t n) {
  constexpr size_t K = kUnitBytes / sizeof(T);
  if (kVec && (u + 1) * K <= n) return reinterpret_cast<const uint4*>(base)[u];
  return load_unit_elementwise<T>(base, u, n);
}

// Stores the elements of unit `u` that fall below n.
template <typename T, bool kVec>
__device__ __forceinline__ void store_unit(T* base, size_t u, size_t n, const uint4& d) {
  constexpr size_t K = kUnitBytes / sizeof(T);
  if (kVec && (u + 1) * K <= n) {
    reinterpret_cast<uint4*>(base)[u] = d;
    return;
  }
  store_unit_elementwise<T>(base, u, n, d);
}

// Runs body(i) for packs i in [lo + first, hi) stepping `stride`, U packs
// per thread at a time: `load(i)` for all U first, then `use(i, v)`, so U
// independent loads per thread are in flight.
template <int U, typename V, typename Load, typename Use>
__device__ __forceinline__ void for_packs_strided(size_t lo, size_t hi, size_t first, size_t stride, Load load,
                                                  Use use) {
  for (size_t base = lo + first; base < hi; base += U * stride) {
    V v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t i = base + u * stride;
      if (i < hi) v[u] = load(i);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t i = base + u * stride;
      if (i < hi) use(i, v[u]);
    }
  }
}

// The same over the threads of the CTA.
template <int U, typename V, typename Load, typename Use>
__device__ __forceinline__ void for_packs(size_t lo, size_t hi, Load load, Use use) {
  for_packs_strided<U, V>(lo, hi, threadIdx.x, blockDim.x, load, use);
}

// Packs per thread in flight in the copy loops and the reduce loops.
constexpr int kCopyUnroll = 4;
constexpr int kReduceUnroll = 2;

}  // namespace arnorm
