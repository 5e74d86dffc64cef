// SENTINEL transport (two-shot above the LL sizes): the data is its own
// signal, at the cost of plain data bytes and no flag.
//
// SENTINEL UNIT (relaxed accesses; no flag, no fence). Wherever no data is
//   pending, a data region holds all-ones bytes, so every element there
//   reads as the sentinel: 0xFFFF for 16-bit types, 0xFFFFFFFF for fp32 (a
//   NaN in every type, so one byte pattern serves every dtype). A writer
//   stores 16-byte units straight into the reader's slot after snt_encode
//   has replaced any element equal to the sentinel by another NaN; the reader
//   polls its local unit with volatile loads until no element is the
//   sentinel, uses the data, and stores the sentinel back (snt_clear).
//   Naturally aligned accesses of at most 4 bytes are single-copy atomic, so
//   the reader sees each element either still pending or final; a 16-byte
//   unit may arrive in pieces, which is why every element is checked.
//
// Why encoding changes no result bit: a NaN only ever enters a rank-order
//   sum of at least two values, and a GPU add with a NaN operand returns the
//   canonical NaN whatever the operand's payload and sign, so the sum (and
//   everything after it) is the same for either NaN. (A communicator of one
//   rank adds nothing: there an fp32 input of all-ones bits comes out of the
//   fused two-shot as 0x7FFFFFFF, another NaN.) Sums travel encoded
//   too; a rounded sum is never the sentinel (rounding a canonical NaN gives
//   0x7FFF / 0x7FFFFFFF), so there the encoding is a no-op kept for safety.
//
// CLEAN REGIONS (the invariant the protocol stands on): in every call, each
//   unit a writer stores is polled and cleared by exactly one reader of the
//   same call, so when a call completes its data region is all-ones again.
//   Writers and readers derive the set of units from values every rank
//   shares (count, dtype, hidden, world, agreed CTA counts), never from a
//   rank's pointer alignment: a unit is always 16 bytes of the workspace,
//   padded with zeros past the data on both sides. The region is filled with
//   all-ones at creation. A call that times out leaves units behind; it also
//   sets the abort flag, after which the communicator serves no call.
//
// Reuse across calls: the call with epoch e uses data parity e % 2 (layout
//   invariant); a reader's clears are performed before its kernel completes,
//   and a peer writes that parity again only in its call e + 2, which it
//   reaches after seeing data this rank pushed in call e + 1, i.e. after
//   this rank's call e completed.
//
// BOUNDED WAIT applies to every poll (poll_batch, sync.cuh).
#pragma once

#include <cstdint>

#include "device/pack.cuh"
#include "device/sync.cuh"

namespace arnorm {

constexpr size_t kSntUnitBytes = kUnitBytes;
// The plain two-shot's CTA ranges start on multiples of this many units: a
// warp's 32 consecutive units are 512 contiguous bytes, whole lines (the
// fused two-shot's shards start on whole lines, kFusedShardAlignUnits).
constexpr size_t kSntRunUnits = 32;
constexpr uint32_t kSntFill = 0xFFFFFFFFu;

__device__ __forceinline__ size_t snt_span(size_t units, int parts) {
  return align_up(ceil_div(units, static_cast<size_t>(parts)), kSntRunUnits);
}

// Per 16-bit lane, 0xFFFF where the lane equals the sentinel.
__device__ __forceinline__ uint32_t snt_lanes16(uint32_t w) { return __vcmpeq2(w, kSntFill); }

template <typename T>
__device__ __forceinline__ bool snt_ready(const uint4& d) {
  if constexpr (sizeof(T) == 4) {
    return d.x != kSntFill && d.y != kSntFill && d.z != kSntFill && d.w != kSntFill;
  } else {
    return (snt_lanes16(d.x) | snt_lanes16(d.y) | snt_lanes16(d.z) | snt_lanes16(d.w)) == 0u;
  }
}

// Replaces every element equal to the sentinel by a NaN that is not it
// (sign bit cleared: 0x7FFF, 0x7FFFFFFF).
template <typename T>
__device__ __forceinline__ uint4 snt_encode(uint4 d) {
  if constexpr (sizeof(T) == 4) {
    d.x = d.x == kSntFill ? 0x7FFFFFFFu : d.x;
    d.y = d.y == kSntFill ? 0x7FFFFFFFu : d.y;
    d.z = d.z == kSntFill ? 0x7FFFFFFFu : d.z;
    d.w = d.w == kSntFill ? 0x7FFFFFFFu : d.w;
  } else {
    d.x ^= snt_lanes16(d.x) & 0x80008000u;
    d.y ^= snt_lanes16(d.y) & 0x80008000u;
    d.z ^= snt_lanes16(d.z) & 0x80008000u;
    d.w ^= snt_lanes16(d.w) & 0x80008000u;
  }
  return d;
}

// Volatile (strong, relaxed) stores: they race with the reader's volatile
// polls by design, and only strong accesses make each element single-copy
// atomic in the memory model.
__device__ __forceinline__ void snt_put(uint4* unit, const uint4& d) {
  asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(unit), "r"(d.x), "r"(d.y), "r"(d.z),
               "r"(d.w)
               : "memory");
}

// Stores an encoded unit into a (usually remote) slot.
template <typename T>
__device__ __forceinline__ void snt_store(uint4* unit, const uint4& d) {
  snt_put(unit, snt_encode<T>(d));
}

__device__ __forceinline__ void snt_clear(uint4* unit) {
  snt_put(unit, make_uint4(kSntFill, kSntFill, kSntFill, kSntFill));
}

__device__ __forceinline__ uint4 snt_fetch(const uint4* unit) {
  uint4 r;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(unit));
  return r;
}

// BOUNDED WAIT on B sentinel units (dead entries skipped): true with raw[]
// complete, false if any never arrived.
template <typename T, int B>
__device__ __forceinline__ bool snt_poll(const uint4* const (&at)[B], const bool (&live)[B], const int (&peer)[B],
                                         const PollWait& w, uint4 (&raw)[B]) {
  return poll_batch(
      live, peer, w, raw, [&](int j) { return snt_fetch(at[j]); }, [](const uint4& d) { return snt_ready<T>(d); });
}

// The data region of parity e of rank r < R, as 16-byte units.
template <int R = kMaxRanks>
__device__ __forceinline__ uint4* snt_region(const SyncParams& s, int r, uint64_t e) {
  return reinterpret_cast<uint4*>(workspace_of<R>(s, r) + s.layout.data_parity_offset(e));
}

}  // namespace arnorm
