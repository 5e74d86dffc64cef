// CLUSTER EXCHANGE (sync.cuh names it): how the CTAs of one thread-block
// cluster share the q_v of a split row (the split epilogue, fused_kernels.cuh)
// without a cluster barrier.
//
// Why not the cluster barrier: barrier.cluster.arrive with its default
// .release semantics (and fence.acq_rel.cluster, and an mbarrier arrive with
// .release.cluster) compiles to MEMBAR.ALL.GPU, which waits until every store
// the thread has in flight is performed - the row's residual_out stores and,
// at N > 1, the call's pushes over NVLink. The split epilogue paid that twice
// a row. Nothing here fences.
//
// The protocol, per CTA c of C and per buffer b (two alternate where a thread
// holds one pack, so a row's sends need not wait for the fold of the row
// before; one where it holds kRowRegs, for shared memory):
//   * full[b] (count 1): thread 0 arrives once per use with expect_tx of the
//     bytes the other CTAs send; every other CTA's thread that owns pack v
//     writes q_v into q[b][v] of this CTA with st.async, whose complete_tx on
//     full[b] is a release at cluster scope; every thread waits on full[b]
//     with acquire at cluster scope, so it reads every q_v of the row.
//   * empty[b] (count C - 1): after this CTA has read q[b] (its fold, then the
//     CTA barrier of block_sum_any), it arrives on empty[b] of every other
//     CTA (release, CTA scope: its loads of q[b] have returned their values
//     by then, so no write can pass them). A thread that sends waits on its
//     own empty[b] for the previous use before it writes into anyone's q[b].
// Phases: use k of buffer b is phase k of both barriers. A sender's bytes
// for use k + 1 cannot land in phase k of a receiver's full[b]: they wait for
// the receiver's hand-back of use k, which follows its wait on phase k. A
// hand-back of use k + 1 cannot count for phase k of empty[b]: it follows a
// fold that needs this CTA's sends of use k + 1, which wait for phase k.
// No wait here is bounded: every CTA of a cluster is resident and every step
// it waits for (a peer's poll) is itself bounded, so each wait ends.
// Exit: every CTA owns a pack of every split row (plan_fused_cluster), so it
// sends to and receives a hand-back from every other CTA for every use; thread
// 0 waits for the last hand-back of each buffer before the CTA exits, so no
// arrive or st.async targets a CTA that has left.
// Set-up (init, fence.mbarrier_init, a relaxed cluster barrier) touches shared
// memory only, so it runs before griddepcontrol.wait and overlaps the
// previous kernel.
#pragma once

#include <cstdint>

#include "core/plan.h"

namespace arnorm {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// The same shared-memory offset in CTA `cta` of this cluster.
__device__ __forceinline__ uint32_t cluster_addr(uint32_t local, uint32_t cta) {
  uint32_t r;
  asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(local), "r"(cta));
  return r;
}

__device__ __forceinline__ uint32_t cluster_cta_rank() {
  uint32_t r;
  asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_arrive_remote(uint32_t remote_bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cluster.b64 _, [%0];" ::"r"(remote_bar) : "memory");
}

__device__ __forceinline__ void mbar_wait_cluster(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n\t.reg .pred p;\n\t"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n\t"
        "selp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  }
}

__device__ __forceinline__ void st_async_f32(uint32_t remote, float v, uint32_t remote_bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];" ::"r"(remote),
               "r"(__float_as_uint(v)), "r"(remote_bar)
               : "memory");
}

// One CTA's side of the exchange; a __shared__ object of the kernel.
template <int kPacks>
struct ClusterExchange {
  static constexpr int kBufs = kPacks == 1 ? 2 : 1;
  static constexpr int kSlots = kMaxFusedCluster * kPacks * kThreadsPerBlock;  // packs of a split row
  float q[kBufs][kSlots];  // q_v at [v]; -1 if the pack's sums never came
  uint64_t full[kBufs];
  uint64_t empty[kBufs];

  // Every thread of every CTA of the cluster, before griddepcontrol.wait.
  __device__ __forceinline__ void setup(uint32_t C) {
    if (C <= 1) return;
    if (threadIdx.x == 0) {
#pragma unroll
      for (int b = 0; b < kBufs; ++b) {
        mbar_init(smem_addr(&full[b]), 1);
        mbar_init(smem_addr(&empty[b]), C - 1);
      }
      asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
  }

  // Thread 0, at the start of each use of buffer b (after its wait on the
  // use before): this CTA expects `bytes` from the others.
  __device__ __forceinline__ void expect(int b, uint32_t bytes) { mbar_arrive_expect_tx(smem_addr(&full[b]), bytes); }

  // A sender, before its first send of use `use` > 0 of buffer b.
  __device__ __forceinline__ void wait_handed_back(int b, uint32_t use) {
    mbar_wait_cluster(smem_addr(&empty[b]), (use - 1) & 1u);
  }

  // q_v of pack v into q[b][v] of every CTA but `me`.
  __device__ __forceinline__ void send(int b, uint32_t v, float qv, uint32_t me, uint32_t C) {
    const uint32_t slot = smem_addr(&q[b][v]), bar = smem_addr(&full[b]);
#pragma unroll
    for (uint32_t j = 0; j < kMaxFusedCluster; ++j)
      if (j < C && j != me) st_async_f32(cluster_addr(slot, j), qv, cluster_addr(bar, j));
  }

  // Every thread: every other CTA's q_v of use `use` is in q[b].
  __device__ __forceinline__ void wait_full(int b, uint32_t use) { mbar_wait_cluster(smem_addr(&full[b]), use & 1u); }

  // Threads 0..C-1 but `me`, after every thread of the CTA has read q[b].
  __device__ __forceinline__ void hand_back(int b, uint32_t me, uint32_t C) {
    if (threadIdx.x < C && threadIdx.x != me) mbar_arrive_remote(cluster_addr(smem_addr(&empty[b]), threadIdx.x));
  }

  // Thread 0, after `iterations` rows: the last hand-back of each buffer.
  __device__ __forceinline__ void drain(uint32_t iterations) {
#pragma unroll
    for (uint32_t b = 0; b < kBufs; ++b)
      if (iterations > b) wait_handed_back(static_cast<int>(b), (iterations - 1 - b) / kBufs + 1);
  }
};

}  // namespace arnorm
