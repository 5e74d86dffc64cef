// PHASE CLOCK: where one CTA's time goes in a call, for measurement builds
// only (cmake -DARNORM_PHASE_TIMING=ON; every mark compiles to nothing
// otherwise, and SyncParams::phase_clock stays nullptr).
//
// Thread 0 of CTA 0 stores clock64() at numbered marks into the row of its
// call: phase_clock[(op * kPhaseCalls + epoch % kPhaseCalls) * kPhaseMarks +
// mark]. clock64 counts the cycles of one multiprocessor, so only marks of
// the same CTA and call are compared. At arnormCommDestroy the communicator
// prints, per operation, the median over the recorded calls of the cycles
// between successive marks that were set (comm/phase_report.cpp). The marks
// are plain stores to device memory off the path of any other thread; they
// add a few instructions to thread 0.
//
// Marks of the kernels that set them:
//   allreduce_oneshot_kernel    0 start, 1 epoch read, 2 pushed,
//                               3 thread 0's units summed and stored, 4 end
//   fused_oneshot_split_kernel  0 start, 1 epoch read, 2 pushed, then for
//                               CTA 0's first row: 3 residual, weight and
//                               own loads issued, 4 peers' sums fetched,
//                               5 h stored and q written, 6 cluster barrier
//                               passed, 7 q folded over the cluster,
//                               8 row reduction (scale known), 9 y stored;
//                               11 end
//   fused_oneshot_wide_kernel   as the split one-shot (6: the CTA barrier
//                               after the q_v, 7: q folded from shared memory)
//   fused_twoshot_ll_kernel     0 start, 1 epoch read, 2 reduce-scatter
//                               pushed, 10 own shard summed and its sums
//                               pushed, 3-9 as above (polling the gathered
//                               sums), 11 end
//   fused_twoshot_kernel        epilogue thread 0: 0 start, 1 epoch read,
//   (sentinel units)            6 the CTA's first row (or pair) done, 7 all
//                               its rows done, 11 end; mover thread 0
//                               (threadIdx kThreadsPerBlock): 2 step 0
//                               pushed, 3 iteration `lag` done (step 0
//                               reduced and its sums pushed, and step lag
//                               pushed where there is one), 5 every step
//                               done
// The report orders each call's marks by time, so the pairs it prints
// follow the kernel's own sequence.
#pragma once

#include "device/kernel_params.h"

namespace arnorm {

// Every thread constructs it; only `writer` of CTA 0 records. A clock owns
// the marks of `own` (a bit per mark) and clears them first, since a row is
// reused every kPhaseCalls calls, perhaps by a kernel with other marks; mark
// 0 (the kernel's start, `start`) belongs to the clock of thread 0. Two
// clocks of one CTA own disjoint marks, so no mark has two writers.
constexpr uint32_t kAllPhaseMarks = (1u << kPhaseMarks) - 1;

struct PhaseClock {
#if ARNORM_PHASE_TIMING
  unsigned long long* row = nullptr;
  __device__ PhaseClock(const SyncParams& s, uint64_t e, long long start, unsigned writer = 0,
                        uint32_t own = kAllPhaseMarks) {
    if (s.phase_clock == nullptr || blockIdx.x != 0 || threadIdx.x != writer) return;
    row = s.phase_clock + (static_cast<size_t>(s.op) * kPhaseCalls + e % kPhaseCalls) * kPhaseMarks;
    for (int i = 1; i < kPhaseMarks; ++i)
      if (own >> i & 1u) row[i] = 0;
    if (own & 1u) row[0] = static_cast<unsigned long long>(start);
  }
  __device__ __forceinline__ void mark(int i) const {
    if (row) row[i] = static_cast<unsigned long long>(clock64());
  }
  __device__ __forceinline__ static long long now() { return clock64(); }
#else
  __device__ PhaseClock(const SyncParams&, uint64_t, long long, unsigned = 0, uint32_t = kAllPhaseMarks) {}
  __device__ __forceinline__ void mark(int) const {}
  __device__ __forceinline__ static long long now() { return 0; }
#endif
};

}  // namespace arnorm
