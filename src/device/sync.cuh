// The synchronisation patterns of every arnorm kernel, each named once.
//
// EPOCH (per-CTA call counter, single writer). Every peer-memory kernel runs
//   exactly max_blocks CTAs (CTAs past the call's active count only count the
//   call), so CTA b's counter epochs[b] is the number of calls so far, the
//   same for every b and on every rank (all ranks make the same calls). CTA b
//   reads it at start, uses e = epochs[b] + 1, and stores e at its end; stream
//   order makes the store visible to the next call. No atomics, no fences.
//
// PUSH-SIGNAL-WAIT (release/acquire at system scope). A CTA stores its data
//   into peers' workspaces, then bar.sync (the CTA's stores are ordered before
//   what follows), then thread q does st.release.sys of e into peer q's flag
//   [phase][me][blockIdx]. The same-index CTA on peer q spins with
//   ld.acquire.sys until the flag >= e, then bar.sync; release cumulativity
//   and the barrier make all of the writer CTA's stores visible to every
//   thread of the reader CTA. Data written by peers is then read with
//   ld.global.cg (L2, never a stale L1 line). Flags are monotonic, so ">="
//   tolerates a peer that is already one call ahead. Matching CTA indices on
//   every rank is what pairs writers with readers: grids are planned from
//   shared values only.
//
// PDL (programmatic dependent launch). Peer kernels may be launched with
//   programmatic stream serialization. Every CTA runs pdl_begin() before it
//   touches memory: launch_dependents lets the next kernel of the stream be
//   scheduled once every CTA of this one has started, and griddepcontrol.wait
//   returns only when the previous kernel has completed with its memory
//   visible. So stream order still holds for every byte a kernel reads or
//   writes (EPOCH and the parity invariant rely on it); only launch latency
//   overlaps. Without the launch attribute both instructions do nothing.
//
// BOUNDED WAIT. A wait gives up after SyncParams::timeout_ns (globaltimer),
//   records {op, rank, peer, epoch} in the host-mapped ErrorRecord (first
//   failure wins, through ControlBlock::abort) and returns false; the CTA then
//   writes NaN over its output instead of data. Once abort is set, every later
//   wait on this rank gives up at once, so a dead peer costs one timeout.
#pragma once

#include <cstdint>

#include "device/kernel_params.h"

namespace arnorm {

__device__ __forceinline__ void st_release_sys(uint64_t* p, uint64_t v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

__device__ __forceinline__ uint64_t ld_acquire_sys(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// ws[r] for a run-time r, selected with compile-time indices: indexing the
// kernel-parameter array with a run-time value would copy it to local memory.
__device__ __forceinline__ char* workspace_of(const SyncParams& s, int r) {
  char* base = nullptr;
#pragma unroll
  for (int i = 0; i < kMaxRanks; ++i)
    if (i == r) base = s.ws[i];
  return base;
}

__device__ __forceinline__ ControlBlock* control_block(const SyncParams& s) {
  return reinterpret_cast<ControlBlock*>(workspace_of(s, s.rank) + s.layout.control_offset);
}

__device__ __forceinline__ uint64_t* flag_ptr(const SyncParams& s, int owner, int phase, int src) {
  return reinterpret_cast<uint64_t*>(workspace_of(s, owner) + s.layout.flag_offset(phase, src, blockIdx.x));
}

__device__ __forceinline__ uint64_t* epoch_slot(const SyncParams& s) {
  return reinterpret_cast<uint64_t*>(workspace_of(s, s.rank) + s.layout.epochs_offset) + blockIdx.x;
}

__device__ __forceinline__ void pdl_begin() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

struct CallStart {
  uint64_t e;    // this call's epoch
  bool aborted;  // an earlier wait on this rank timed out
};

// EPOCH: start of a call. The slot was written by another kernel, perhaps on
// another stream and multiprocessor: read it past L1.
// Once this rank has given up on a peer, its kernels neither push nor
// signal: a rank that ran ahead through queued calls or graph replays would
// otherwise overwrite data a healthy peer is still reading and satisfy that
// peer's waits with flags of later calls. Its peers then time out too and
// report it, instead of returning mixed data.
__device__ __forceinline__ CallStart op_begin(const SyncParams& s) {
  __shared__ uint64_t epoch;
  __shared__ uint32_t aborted;
  if (threadIdx.x == 0) {
    epoch = *reinterpret_cast<volatile uint64_t*>(epoch_slot(s)) + 1;
    aborted = *reinterpret_cast<volatile uint32_t*>(&control_block(s)->abort);
  }
  __syncthreads();
  return CallStart{epoch, aborted != 0};
}

// EPOCH: end of a call (every CTA, whatever happened). Only thread 0 ever
// touches the slot, so no barrier is needed before the store.
__device__ __forceinline__ void op_end(const SyncParams& s, uint64_t e) {
  if (threadIdx.x == 0) *epoch_slot(s) = e;
}

// Out of line and rare; takes plain values (a reference to the kernel
// parameters would force a local copy of them in every kernel).
static __device__ __noinline__ void record_timeout(ControlBlock* c, ErrorRecord* error, int32_t op, int rank, int peer,
                                            uint64_t e) {
  if (atomicCAS(&c->abort, 0u, 1u) == 0u) {
    volatile ErrorRecord* r = error;
    r->op = op;
    r->rank = rank;
    r->peer = peer;
    r->epoch = e;
    __threadfence_system();
    r->status = ARNORM_ERROR_PEER_TIMEOUT;
    __threadfence_system();
  }
}

// BOUNDED WAIT on one flag.
__device__ __forceinline__ bool wait_flag(const SyncParams& s, const uint64_t* flag, uint64_t e, int peer) {
  if (ld_acquire_sys(flag) >= e) return true;
  const uint64_t t0 = global_timer_ns();
  volatile uint32_t* abort = &control_block(s)->abort;
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      if (ld_acquire_sys(flag) >= e) return true;
    }
    if (*abort) return false;
    if (global_timer_ns() - t0 > s.timeout_ns) {
      record_timeout(control_block(s), s.error, s.op, s.rank, peer, e);
      return false;
    }
  }
}

// PUSH-SIGNAL-WAIT: call after this CTA's stores to peers for `phase`.
// Returns false (uniformly across the CTA) if any peer did not arrive.
__device__ __forceinline__ bool signal_and_wait(const SyncParams& s, int phase, uint64_t e) {
  __shared__ int all_arrived;
  if (threadIdx.x == 0) all_arrived = 1;
  __syncthreads();
  const int q = threadIdx.x;
  if (q < s.world && q != s.rank) {
    st_release_sys(flag_ptr(s, q, phase, s.rank), e);
    if (!wait_flag(s, flag_ptr(s, s.rank, phase, q), e, q)) all_arrived = 0;
  }
  __syncthreads();
  const bool arrived = all_arrived != 0;
  // Every thread has read the verdict before a later call resets it.
  __syncthreads();
  return arrived;
}

}  // namespace arnorm
