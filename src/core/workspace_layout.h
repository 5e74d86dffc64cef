// The one description of every byte of a rank's peer workspace. Every rank
// computes the same layout from the same inputs (world size, agreed CTA
// limit, budget), so an offset computed locally is valid in a peer's
// mapping. Compiles for host and device.
//
//   [ ControlBlock | ProbeBlock | epochs[max_blocks] | progress[2][world][max_blocks]
//     | data parity 0 | data parity 1 | LL parity 0 | LL parity 1 ]
//
// The data regions carry sentinel units (two-shot above the LL sizes;
// device/sentinel.cuh): all-ones bytes wherever no data is pending, every
// unit cleared by its reader. The LL regions carry only LL words (one-shot,
// small two-shot; device/ll.cuh). Invariant: no kernel ever writes anything
// but LL words into an LL region, so a stale word there holds an older
// call's epoch, never the current one; the two kinds of region are apart
// because each protocol needs its own idea of "nothing pending".
//
// Invariant (two parities, for both kinds of region): every peer-memory kernel
// keeps the max_blocks epoch counters equal to the number of calls made so
// far, on every rank (EPOCH in device/sync.cuh). The call with epoch e writes peers' regions of parity e % 2 only. A
// rank reaches epoch e+2 only after its epoch-(e+1) kernel has seen data that
// every peer pushed in its epoch-(e+1) kernel (directly, or through the
// owners of the shards it reads where the fused two-shot leaves a rank no
// shard), which that peer started only after its epoch-e kernel had finished
// reading (and clearing) parity e % 2. So a region is never overwritten while
// a peer still reads it, with no barrier at the end.
// What this relies on beyond the PTX memory model, whose relaxed pushes and
// polls form no release/acquire chain here: a kernel's loads have returned
// and its stores (the clears) are performed at its GPU's L2, the point of
// coherence for peers' NVLink stores too, before the next kernel of the
// stream issues anything. Every flag-in-data all-reduce (NCCL's LL, the
// Lamport kernels) relies on the same; a fence at the end of every call
// would make it formal at a cost on every call.
#pragma once

#include <cstddef>
#include <cstdint>

#include "arnorm/arnorm.h"

#if defined(__CUDACC__)
#define ARNORM_HD __host__ __device__
#else
#define ARNORM_HD
#endif

namespace arnorm {

constexpr int kMaxRanks = ARNORM_MAX_RANKS;
// Upper bound on CTAs per kernel (the agreed max_blocks is at most this).
constexpr int kMaxBlocks = 1024;
constexpr size_t kLayoutAlign = 256;
// Shard and chunk lengths are multiples of this many elements, so a 16-byte
// vector of any element type never straddles a shard or chunk boundary.
constexpr size_t kElemAlign = 16;
// Simple (flag) two-shot slots and per-CTA ranges start on multiples of
// this many elements (128 bytes or more): a warp's 512-byte store run then
// covers whole lines, never writing partial lines over NVLink.
constexpr size_t kLineElemAlign = 64;
constexpr size_t kDefaultWorkspaceBytes = 64ull << 20;
// Every byte of a data region with nothing pending (device/sentinel.cuh).
constexpr int kSentinelByte = 0xFF;
constexpr size_t kMinDataBytesPerParity = 64ull << 10;
// An LL word (8 bytes) carries 4 bytes of data: LL regions hold twice the
// data they carry.
constexpr size_t kLLExpansion = 2;
// The flag an LL word of the call with epoch e carries (device/ll.cuh):
// never 0 (the value of a word never written), and different for e and
// e - 2 (the modulus is odd), so a stale word of the same parity never passes.
ARNORM_HD inline uint32_t ll_flag(uint64_t e) { return static_cast<uint32_t>(e % 0xFFFFFFFFull) + 1u; }

// Share of the budget past the control area that goes to the LL regions:
// 1/kLLShareDivisor (4 MiB per parity of the default budget, enough for every
// size the LL kernels are chosen for; the rest keeps two-shot chunks large),
// but up to half of a small budget (at most kLLSmallBudgetBytes per parity)
// so that a small workspace still holds wide one-shot rows.
constexpr size_t kLLShareDivisor = 8;
constexpr size_t kLLSmallBudgetBytes = 1ull << 20;
// One-shot chunks are multiples of this many elements: whole groups of 32
// 16-byte LL units (device/ll.cuh) for every element size.
constexpr size_t kLLElemAlign = 256;
constexpr size_t kMinLLBytesPerParity = 16ull << 10;

// Rows per CTA a ring-progress word counts (the low bits; the epoch above).
constexpr int kProgressRowBits = 24;

// Owned by the local rank; peers only read `identity` (setup probe).
struct ControlBlock {
  uint32_t abort;     // set once a wait timed out; later waits give up at once
  uint32_t pad0;
  uint64_t identity;  // written at setup; peers read it to prove loads reach us
  uint32_t error_op;  // first timed-out op (device copy of the host error record)
  uint32_t pad;
};

// Written by peers at setup (probe of stores).
struct ProbeBlock {
  uint64_t token[kMaxRanks];
};

ARNORM_HD inline size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
ARNORM_HD inline size_t align_down(size_t x, size_t a) { return x / a * a; }
ARNORM_HD inline size_t ceil_div(size_t x, size_t a) { return (x + a - 1) / a; }

// Areas that hold one slot per sending peer: the slot of source `src` in
// receiver `dst`'s region is its rank among the ranks other than dst (a rank
// never sends to itself, so src != dst: callers skip their own rank), so
// world - 1 slots, at least one.
ARNORM_HD inline int peer_slot(int src, int dst) { return src < dst ? src : src - 1; }
ARNORM_HD inline size_t peer_slots(int world_size) {
  return world_size > 1 ? static_cast<size_t>(world_size - 1) : size_t{1};
}

struct WorkspaceLayout {
  int world_size = 0;
  int max_blocks = 0;
  size_t control_offset = 0;
  size_t probe_offset = 0;
  size_t epochs_offset = 0;  // max_blocks uint64_t call counters (EPOCH, device/sync.cuh)
  // RING PROGRESS of the fused two-shot (device/fused_kernels.cuh), kept in
  // the memory of the rank that waits on it: word (which * world + q) *
  // max_blocks + b holds how many rows of CTA b rank q has consumed (which
  // 0: its reduce-scatter slots, read by its movers; 1: its gathered sums,
  // read by its epilogue), (epoch << kProgressRowBits) | rows, written by
  // rank q only, monotonic.
  size_t progress_offset = 0;
  size_t data_offset = 0;
  size_t data_bytes_per_parity = 0;
  size_t ll_offset = 0;
  size_t ll_bytes_per_parity = 0;
  size_t total_bytes = 0;

  ARNORM_HD size_t data_parity_offset(uint64_t epoch) const {
    return data_offset + static_cast<size_t>(epoch & 1) * data_bytes_per_parity;
  }

  ARNORM_HD size_t ll_parity_offset(uint64_t epoch) const {
    return ll_offset + static_cast<size_t>(epoch & 1) * ll_bytes_per_parity;
  }

  // One-shot: rank q's LL region holds one slot per source rank, each
  // carrying oneshot_chunk_elems() elements (a whole chunk of that source's
  // input) in oneshot_slot_bytes() bytes of LL words.
  ARNORM_HD size_t oneshot_chunk_elems(size_t elem_size) const {
    return align_down(ll_bytes_per_parity / kLLExpansion / world_size / elem_size, kLLElemAlign);
  }
  ARNORM_HD size_t oneshot_slot_bytes(size_t elem_size) const {
    return oneshot_chunk_elems(elem_size) * elem_size * kLLExpansion;
  }
  // One-shot over sentinel units: rank q's data region holds one slot per
  // source rank, each a whole chunk of that source's input.
  ARNORM_HD size_t oneshot_snt_chunk_elems(size_t elem_size) const {
    return align_down(data_bytes_per_parity / world_size / elem_size, kLineElemAlign);
  }
  // Two-shot over LL: rank q's LL region holds a reduce-scatter area (one
  // shard slot per source) and an all-gather area (one reduced-shard slot per
  // source), each slot carrying twoshot_ll_shard_capacity() elements in
  // twoshot_ll_slot_bytes() bytes of LL words.
  ARNORM_HD size_t twoshot_ll_shard_capacity(size_t elem_size) const {
    return align_down(ll_bytes_per_parity / kLLExpansion / (2 * static_cast<size_t>(world_size)) / elem_size,
                      kLLElemAlign);
  }
  ARNORM_HD size_t twoshot_ll_slot_bytes(size_t elem_size) const {
    return twoshot_ll_shard_capacity(elem_size) * elem_size * kLLExpansion;
  }
  ARNORM_HD size_t twoshot_ll_chunk_elems(size_t elem_size) const {
    return twoshot_ll_shard_capacity(elem_size) * world_size;
  }
  // Two-shot: rank q's region holds a reduce-scatter area (one shard slot per
  // peer source, peer_slot) and an all-gather area (one reduced-shard slot
  // per peer source). A rank never sends to itself, so world - 1 slots each:
  // at N=4 a chunk is 4/3 of what one slot per rank would allow, and each
  // chunk costs a pipeline fill and drain (16 MB took 91 us in two chunks,
  // 85 us in one, 4x H200).
  ARNORM_HD size_t twoshot_shard_capacity(size_t elem_size) const {
    return align_down(data_bytes_per_parity / (2 * peer_slots(world_size)) / elem_size, kLineElemAlign);
  }
  ARNORM_HD size_t twoshot_chunk_elems(size_t elem_size) const {
    return twoshot_shard_capacity(elem_size) * world_size;
  }
};

// Layout for `budget_bytes` of workspace. Returns false (and leaves *out
// untouched) when the budget cannot hold the control area plus a minimal
// data region, or the arguments are out of range.
bool compute_workspace_layout(int world_size, int max_blocks, size_t budget_bytes,
                              WorkspaceLayout* out);
// The smallest budget compute_workspace_layout accepts (what a too-small
// workspace_bytes is told to grow to), 0 if none does (arguments out of
// range).
size_t min_workspace_bytes(int world_size, int max_blocks);

// Two-shot: length of each rank's shard for a chunk of n elements, a multiple
// of kElemAlign; shard j covers [j*len, min(n, (j+1)*len)).
ARNORM_HD inline size_t twoshot_shard_len(size_t n, int world_size) {
  return align_up(ceil_div(n, static_cast<size_t>(world_size)), kElemAlign);
}

}  // namespace arnorm
