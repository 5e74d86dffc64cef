// The synchronisation patterns of every arnorm kernel, each named once.
//
// EPOCH (max_blocks call counters, each with one writer per call). Invariant:
//   between calls every counter epochs[0..max_blocks) holds the number of
//   calls made so far on this rank, the same on every rank (all ranks make
//   the same calls). A kernel runs only the G CTAs that carry data (G <=
//   max_blocks, chosen per call). CTA b reads epochs[b] at start and uses e =
//   epochs[b] + 1; at its end it stores e into the counters it stands for, b,
//   b + G, b + 2G, ... So every counter is written once per call, and the
//   only counter a CTA reads (its own, b < G) is written by that CTA alone,
//   after its read; stream order makes the stores visible to the next call.
//   No atomics, no fences, and no idle CTAs launched only to count the call.
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
// DATA AS SIGNAL (LL words in ll.cuh, sentinel units in sentinel.cuh): no
//   kernel signals a peer separately from its data; a reader polls the data
//   itself, so no fence and no flag round trip sits on any path.
//
// BACKPRESSURE (fused two-shot, inside one CTA): the epilogue warps count
//   their finished rows in a shared-memory atomic; the mover warps push a
//   step only while it is close enough to that count. It orders nothing
//   about data (the sentinel units do that), so relaxed atomics suffice; it
//   bounds how far writes run ahead of reads (fused_kernels.cuh says why it
//   cannot deadlock).
//
// CLUSTER EXCHANGE (split epilogue, inside one thread-block cluster): each
//   CTA sends its packs' q_v into every other CTA's shared memory with
//   st.async, whose complete_tx on the receiver's mbarrier releases at
//   cluster scope; the receiver acquires at cluster scope, folds, and hands
//   the buffer back by arriving on the senders' mbarriers. No fence, so no
//   wait for the CTA's stores in flight over NVLink (cluster_exchange.cuh).
//
// BOUNDED WAIT. A poll gives up after SyncParams::timeout_ns (globaltimer),
//   records {op, rank, peer, epoch} in the host-mapped ErrorRecord (first
//   failure wins, through ControlBlock::abort) and returns false; the CTA then
//   writes NaN over its output instead of data. Once abort is set, every later
//   wait on this rank gives up at once, so a dead peer costs one timeout.
#pragma once

#include <cstdint>

#include "device/kernel_params.h"

namespace arnorm {

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// ws[r] for a run-time r < R, selected with compile-time indices: indexing
// the kernel-parameter array with a run-time value would copy it to local
// memory.
template <int R = kMaxRanks>
__device__ __forceinline__ char* workspace_of(const SyncParams& s, int r) {
  char* base = nullptr;
#pragma unroll
  for (int i = 0; i < R; ++i)
    if (i == r) base = s.ws[i];
  return base;
}

__device__ __forceinline__ void pdl_begin() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

struct CallStart {
  uint64_t e;    // this call's epoch
  bool aborted;  // an earlier wait on this rank timed out
};

// EPOCH: start of a call, in two steps. op_read, the kernel's first step
// after pdl_begin (the slot was written by the kernel before, perhaps on
// another stream and multiprocessor, and griddepcontrol.wait is what makes
// its stores visible under PDL), has thread 0 issue the loads of the CTA's
// counter and of the abort flag, past L1; their latency (one L2 round
// trip, arnorm-probe) then overlaps the kernel's prologue. op_begin hands
// the values to the CTA through shared memory and a CTA barrier.
// Once this rank has given up on a peer, its kernels push nothing: a rank
// that ran ahead through queued calls or graph replays would otherwise
// overwrite data a healthy peer is still reading and satisfy that peer's
// polls with data of later calls. Its peers then time out too and
// report it, instead of returning mixed data.
struct CallRead {
  uint64_t counter;  // thread 0 only
  uint32_t aborted;  // thread 0 only
};

__device__ __forceinline__ CallRead op_read(const SyncParams& s) {
  CallRead r{0, 0};
  if (threadIdx.x == 0) {
    r.counter = *reinterpret_cast<volatile uint64_t*>(s.epochs + blockIdx.x);
    r.aborted = *reinterpret_cast<volatile uint32_t*>(&s.control->abort);
  }
  return r;
}

__device__ __forceinline__ CallStart op_begin(const CallRead& r) {
  __shared__ uint64_t epoch;
  __shared__ uint32_t aborted;
  if (threadIdx.x == 0) {
    epoch = r.counter + 1;
    aborted = r.aborted;
  }
  __syncthreads();
  return CallStart{epoch, aborted != 0};
}

// EPOCH: end of a call (every thread of warp 0 of every CTA, whatever
// happened). Thread 0 stores the CTA's own counter, which only it has read,
// so no barrier is needed before the store; the other counters this CTA
// stands for are read by no CTA of this call.
__device__ __forceinline__ void op_end(const SyncParams& s, uint64_t e) {
  if (threadIdx.x >= 32) return;
  uint64_t* epochs = s.epochs;
  const unsigned stride = 32u * gridDim.x, n = static_cast<unsigned>(s.layout.max_blocks);
  for (unsigned c = blockIdx.x + threadIdx.x * gridDim.x; c < n; c += stride) epochs[c] = e;
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

// What a poll needs besides the data, as plain values (a reference to the
// kernel parameters would force a local copy of them).
struct PollWait {
  ControlBlock* control;
  ErrorRecord* error;
  uint64_t timeout_ns;
  uint64_t epoch;
  int32_t op;
  int rank;
  bool aborted;  // the call started after an earlier wait on this rank gave up
};

__device__ __forceinline__ PollWait poll_wait_of(const SyncParams& s, const CallStart& call) {
  return PollWait{s.control, s.error, s.timeout_ns, call.e, s.op, s.rank, call.aborted};
}

// BOUNDED WAIT on a batch of B units whose data is their own signal (LL
// words, sentinel units): fetch(j) loads unit j (written by rank
// peer_of(j), asked only to name a writer that never came), done(raw) says
// whether it is complete; dead entries (live[j] false) are skipped. Every
// fetch of a round is issued before any is checked, so a batch costs about
// one round trip once its data is there. True with raw[] complete; false if
// any unit never arrived (its writer is recorded), and false at once in a
// call that started aborted: a unit that looks complete then may hold data a
// late peer wrote for a call this rank gave up on (a sentinel unit carries
// no epoch), which must not pass as this call's.
template <int B, typename Raw, typename PeerOf, typename Fetch, typename Done>
__device__ __forceinline__ bool poll_batch_of(const bool (&live)[B], PeerOf peer_of, const PollWait& w,
                                              Raw (&raw)[B], Fetch fetch, Done done) {
  if (w.aborted) return false;
  bool pending[B];
#pragma unroll
  for (int j = 0; j < B; ++j)
    if (live[j]) raw[j] = fetch(j);
  bool any = false;
#pragma unroll
  for (int j = 0; j < B; ++j) {
    pending[j] = live[j] && !done(raw[j]);
    any = any || pending[j];
  }
  if (!any) return true;
  const uint64_t t0 = global_timer_ns();
  for (uint32_t spin = 1;; ++spin) {
#pragma unroll
    for (int j = 0; j < B; ++j)
      if (pending[j]) raw[j] = fetch(j);
    any = false;
    int missing = -1;
#pragma unroll
    for (int j = 0; j < B; ++j) {
      if (pending[j]) pending[j] = !done(raw[j]);
      if (pending[j] && missing < 0) missing = j;
      any = any || pending[j];
    }
    if (!any) return true;
    if (spin % 16 == 0) {
      if (*reinterpret_cast<volatile uint32_t*>(&w.control->abort)) return false;
      if (global_timer_ns() - t0 > w.timeout_ns) {
        record_timeout(w.control, w.error, w.op, w.rank, peer_of(missing), w.epoch);
        return false;
      }
    }
  }
}

// The same with the writers in an array.
template <int B, typename Raw, typename Fetch, typename Done>
__device__ __forceinline__ bool poll_batch(const bool (&live)[B], const int (&peer)[B], const PollWait& w,
                                           Raw (&raw)[B], Fetch fetch, Done done) {
  return poll_batch_of(live, [&](int j) { return peer[j]; }, w, raw, fetch, done);
}

// RING PROGRESS (the fused two-shot's row slots, workspace_layout.h): a
// group of threads that has consumed the slots of some rows (read and
// cleared their sentinel units) publishes how many rows into the memory of
// every rank that writes those slots, and a writer about to reuse a slot
// first waits until every reader of it has published.
// Release: the group's reads and clears, the group's barrier, then thread 0
// fences at system scope (cumulative over what the barrier ordered before
// it) and stores the word to each writer. Acquire: thread 0 of the writing
// group loads its local copy with ld.acquire.sys until it is large enough,
// then the group's barrier, before any thread of the group stores into the
// slot. The fence waits for the group's stores still in flight (its pushes
// over NVLink), so a group publishes every few steps, not every step
// (FusedParams::ring_publish). A word is (epoch << kProgressRowBits) | rows:
// monotonic across calls, so a word of an older call never passes.
__device__ __forceinline__ uint64_t progress_value(uint64_t e, size_t rows) {
  return (e << kProgressRowBits) | static_cast<uint64_t>(rows);
}

// In rank `owner`'s memory: how many rows of CTA b rank q has consumed.
template <int R = kMaxRanks>
__device__ __forceinline__ uint64_t* progress_word(const SyncParams& s, int owner, int which, int q, int b) {
  return reinterpret_cast<uint64_t*>(workspace_of<R>(s, owner) + s.layout.progress_offset) +
         (static_cast<size_t>(which) * s.world + q) * s.layout.max_blocks + b;
}

// Thread 0 of the group, after the group's barrier: rank s.rank has
// consumed v's rows; told to every rank that `to(r)`.
template <int R, typename To>
__device__ __forceinline__ void publish_progress(const SyncParams& s, int which, int b, uint64_t v, To to) {
  __threadfence_system();
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= s.world || !to(r)) continue;
    uint64_t* word = progress_word<R>(s, r, which, s.rank, b);
    asm volatile("st.volatile.global.u64 [%0], %1;" ::"l"(word), "l"(v) : "memory");
  }
}

__device__ __forceinline__ uint64_t load_acquire_sys(const uint64_t* word) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(word) : "memory");
  return v;
}

// BOUNDED WAIT until rank r's word is at least `target` (thread 0 of the
// writing group; its barrier follows). False if it never got there.
__device__ __forceinline__ bool wait_progress(const uint64_t* word, int r, uint64_t target, const PollWait& w) {
  const bool live[1] = {true};
  const int peer[1] = {r};
  uint64_t raw[1];
  return poll_batch(
      live, peer, w, raw, [&](int) { return load_acquire_sys(word); }, [&](uint64_t v) { return v >= target; });
}

}  // namespace arnorm
