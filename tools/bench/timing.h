// Timing of one collective operation, the way every sweep of arnorm-bench
// measures. CUDA-graph timing (the default): eager warmup, `iters` calls
// captured in one graph, one untimed replay, a barrier across ranks, then
// `replays` timed replays. Eager timing (`replays` 0, -G 0): eager warmup, a
// barrier, then kEagerRounds timed rounds of `iters` eager calls each, so
// the host's cost of a call counts where the GPU would wait for it.
#ifndef ARNORM_TOOLS_BENCH_TIMING_H
#define ARNORM_TOOLS_BENCH_TIMING_H

#include <cuda_runtime_api.h>

#include <functional>

#include "common/launcher.h"

namespace arnorm_bench {

// Enqueues one call of the operation on `stream`. Returns 0, or non-zero
// after reporting why: the operation failed (not the harness) and nothing
// was enqueued.
using Enqueue = std::function<int(cudaStream_t)>;

struct TimingConfig {
  int warmup;   // eager calls before capture (or before the timed rounds)
  int iters;    // calls per graph (or per eager round)
  int replays;  // timed graph replays; 0: eager timing
};

constexpr int kEagerRounds = 15;

struct TimingResult {
  bool op_failed = false;  // enqueue, capture, instantiation or a replay failed
  double median_us = 0.0;  // per call: median over replays (or rounds) of (its time / iters)
};

// Collective: performs exactly one barrier on `host` whatever happens on this
// rank, so a rank whose operation failed stays in step with the others.
// Returns non-zero only if the harness itself failed (the barrier); the
// ranks are then out of step and the caller must stop.
int time_calls(const Enqueue& op, const TimingConfig& cfg, cudaStream_t stream,
                  arnorm_tools::HostCollectives& host, TimingResult* result);

}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_TIMING_H
