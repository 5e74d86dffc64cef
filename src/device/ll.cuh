// LL (low-latency) transport: the flag travels inside every data word.
//
// LL WORD (relaxed, single-copy atomic 8-byte accesses; no fence, no
//   separate signal). Every 4 bytes of data travel as one 8-byte word
//   {data, flag} with flag = ll_flag(epoch), never 0. A naturally
//   aligned 8-byte access is single-copy atomic, so a reader that sees its
//   flag in a word sees that word's data with it. A writer stores each 16
//   data bytes as two v2.u64 volatile stores straight into the reader's LL
//   slot; a reader polls its local copy with volatile v2.u64 loads (never L1)
//   until every word carries the flag. Nothing orders words against each
//   other and nothing needs to: each word validates itself. A reader may
//   re-read a word it has seen complete with plain loads: no peer writes
//   that parity again before this rank's next call has started.
//
// Why a stale word can never pass: LL regions hold LL words only (layout
//   invariant), the call with epoch e uses LL parity e % 2, and the parity
//   invariant keeps a peer from writing parity e % 2 again before this rank
//   has finished reading it; so a stale word carries an epoch e' < e of the
//   same parity (or 0, never written). ll_flag maps epochs to 1..2^32-1
//   (never the 0 of a word never written), and e and e - 2k share a flag
//   only when 2k is a multiple of 2^32 - 1: a word left untouched for
//   about 8.6e9 calls.
//
// BOUNDED WAIT applies to polling as to flags (sync.cuh): a word that never
//   arrives makes the reader give up after the timeout, record the missing
//   rank and return false.
#pragma once

#include <cstdint>

#include "device/pack.cuh"
#include "device/sync.cuh"

namespace arnorm {

// Data bytes one LL unit carries; its LL words take kLLExpansion times as much.
constexpr size_t kLLUnitBytes = kUnitBytes;
constexpr size_t kLLWordsPerUnit = kLLUnitBytes / 4;
// Units are laid out in groups of 32 (one per lane of a warp): the first
// halves (words 0-1) of the group's units, then their second halves, so that
// a warp storing or loading consecutive units touches 512 contiguous bytes
// per instruction, never half-written lines.
constexpr size_t kLLGroupUnits = 32;

// Units per CTA (or per shard) when `units` are cut into `parts`: whole LL
// groups, so that every warp stores and loads whole 512-byte runs (a run
// split over two groups writes partial lines over NVLink, which is slow).
__device__ __forceinline__ size_t ll_span(size_t units, int parts) {
  return align_up(ceil_div(units, static_cast<size_t>(parts)), kLLGroupUnits);
}

__device__ __forceinline__ uint64_t ll_word(uint32_t data, uint32_t flag) {
  return static_cast<uint64_t>(data) | (static_cast<uint64_t>(flag) << 32);
}

// Word index of the first half of unit u; the second half is kLLGroupUnits*2 further.
__device__ __forceinline__ size_t ll_half0(size_t u) {
  return (u / kLLGroupUnits) * (kLLGroupUnits * kLLWordsPerUnit) + (u % kLLGroupUnits) * 2;
}
constexpr size_t kLLHalfStride = kLLGroupUnits * 2;

// Stores unit `u` (16 data bytes) into an LL slot.
__device__ __forceinline__ void ll_store_unit(uint64_t* slot, size_t u, const uint4& d, uint32_t flag) {
  uint64_t* w = slot + ll_half0(u);
  asm volatile("st.volatile.global.v2.u64 [%0], {%1, %2};" ::"l"(w), "l"(ll_word(d.x, flag)),
               "l"(ll_word(d.y, flag))
               : "memory");
  asm volatile("st.volatile.global.v2.u64 [%0], {%1, %2};" ::"l"(w + kLLHalfStride), "l"(ll_word(d.z, flag)),
               "l"(ll_word(d.w, flag))
               : "memory");
}

// The four words of unit u as loaded, not yet checked. Loads carry no
// memory clobber so that a thread can issue the loads of many units before
// it checks any (a check is a branch on the loaded value).
struct LLRaw {
  uint64_t w[4];
};

// Address of unit u's first half in a slot.
__device__ __forceinline__ const uint64_t* ll_at(const uint64_t* slot, size_t u) { return slot + ll_half0(u); }

__device__ __forceinline__ LLRaw ll_fetch_at(const uint64_t* p) {
  LLRaw r;
  asm volatile("ld.volatile.global.v2.u64 {%0, %1}, [%2];" : "=l"(r.w[0]), "=l"(r.w[1]) : "l"(p));
  asm volatile("ld.volatile.global.v2.u64 {%0, %1}, [%2];" : "=l"(r.w[2]), "=l"(r.w[3]) : "l"(p + kLLHalfStride));
  return r;
}

__device__ __forceinline__ bool ll_ready(const LLRaw& r, uint32_t flag) {
  return static_cast<uint32_t>(r.w[0] >> 32) == flag && static_cast<uint32_t>(r.w[1] >> 32) == flag &&
         static_cast<uint32_t>(r.w[2] >> 32) == flag && static_cast<uint32_t>(r.w[3] >> 32) == flag;
}

__device__ __forceinline__ uint4 ll_data(const LLRaw& r) {
  return make_uint4(static_cast<uint32_t>(r.w[0]), static_cast<uint32_t>(r.w[1]), static_cast<uint32_t>(r.w[2]),
                    static_cast<uint32_t>(r.w[3]));
}

// BOUNDED WAIT on a batch of B units: unit j lives at `at[j]` (its first
// half, ll_at), written by rank peer[j]; dead entries are skipped (poll_batch,
// sync.cuh). True with raw[] complete; false if any unit never arrived.
template <int B>
__device__ __forceinline__ bool ll_poll(const uint64_t* const (&at)[B], const bool (&live)[B], const int (&peer)[B],
                                        const PollWait& w, LLRaw (&raw)[B]) {
  const uint32_t flag = ll_flag(w.epoch);
  return poll_batch(
      live, peer, w, raw, [&](int j) { return ll_fetch_at(at[j]); }, [&](const LLRaw& r) { return ll_ready(r, flag); });
}

// Data of a unit already seen complete in this call: plain L2 loads, no
// check (its words cannot change before this rank's next call has started).
__device__ __forceinline__ uint4 ll_read_seen(const uint64_t* slot, size_t u) {
  const uint64_t* p = slot + ll_half0(u);
  const ulonglong2 a = __ldcg(reinterpret_cast<const ulonglong2*>(p));
  const ulonglong2 b = __ldcg(reinterpret_cast<const ulonglong2*>(p + kLLHalfStride));
  return make_uint4(static_cast<uint32_t>(a.x), static_cast<uint32_t>(a.y), static_cast<uint32_t>(b.x),
                    static_cast<uint32_t>(b.y));
}

// The LL slot of source rank `src` in rank `owner`'s LL region of parity e
// (owner < R).
template <int R = kMaxRanks>
__device__ __forceinline__ uint64_t* ll_slot(const SyncParams& s, int owner, int src, uint64_t e, size_t slot_bytes) {
  return reinterpret_cast<uint64_t*>(workspace_of<R>(s, owner) + s.layout.ll_parity_offset(e) + src * slot_bytes);
}

// Pushes units [lo, hi) of `in` (n elements) as LL words into slot [me] of
// every peer's LL region; thread t handles units lo + t + k * blockDim.x.
// `first` is unit lo + threadIdx.x, loaded by the caller before op_begin so
// that its latency overlaps the epoch read.
template <typename T, bool kVec, int R>
__device__ __forceinline__ void ll_push(const SyncParams& s, uint64_t e, size_t slot_bytes, const T* in, size_t n,
                                        size_t lo, size_t hi, const uint4& first) {
  const uint32_t flag = ll_flag(e);
  uint64_t* my_slot_on[R];
#pragma unroll
  for (int r = 0; r < R; ++r) my_slot_on[r] = r < s.world ? ll_slot<R>(s, r, s.rank, e, slot_bytes) : nullptr;
  auto push = [&](size_t u, const uint4& d) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (r < s.world && r != s.rank) ll_store_unit(my_slot_on[r], u, d, flag);
  };
  if (lo + threadIdx.x < hi) push(lo + threadIdx.x, first);
  for_packs<kCopyUnroll, uint4>(
      lo + blockDim.x, hi, [&](size_t u) { return load_unit<T, kVec>(in, u, n); }, push);
}

}  // namespace arnorm
