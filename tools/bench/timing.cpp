#include "timing.h"

#include <algorithm>
#include <vector>

#include "common/check.h"

namespace arnorm_bench {
namespace {

struct Graph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~Graph() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
};

struct Events {
  std::vector<cudaEvent_t> events;
  ~Events() {
    for (cudaEvent_t e : events) cudaEventDestroy(e);
  }
  bool create(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      cudaEvent_t e = nullptr;
      if (!TOOLS_CUDA_OK(cudaEventCreate(&e))) return false;
      events.push_back(e);
    }
    return true;
  }
};

// Eager calls before anything is timed; false when the operation failed.
bool eager_warmup(const Enqueue& op, const TimingConfig& cfg, cudaStream_t stream) {
  for (int i = 0; i < cfg.warmup; ++i)
    if (op(stream) != 0) return false;
  return TOOLS_CUDA_OK(cudaStreamSynchronize(stream));
}

// Warmup, capture, instantiate and one untimed replay. False when the
// operation failed (already reported); the stream is then out of capture.
bool build_graph(const Enqueue& op, const TimingConfig& cfg, cudaStream_t stream, Graph* g) {
  if (!eager_warmup(op, cfg, stream)) return false;
  // Thread-local mode: the library's and NCCL's helper threads may make
  // unsafe calls while this thread captures.
  if (!TOOLS_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal)))
    return false;
  bool captured = true;
  for (int i = 0; i < cfg.iters && captured; ++i) captured = op(stream) == 0;
  // Always end the capture, so the stream is usable again.
  const cudaError_t end = cudaStreamEndCapture(stream, &g->graph);
  if (!captured) return false;
  if (!TOOLS_CUDA_OK(end)) return false;
  if (!TOOLS_CUDA_OK(cudaGraphInstantiate(&g->exec, g->graph, 0))) return false;
  if (!TOOLS_CUDA_OK(cudaGraphLaunch(g->exec, stream))) return false;
  return TOOLS_CUDA_OK(cudaStreamSynchronize(stream));
}

// `rounds` timed runs of `run` (one graph replay, or `iters` eager calls),
// back to back with no barrier in between: each one's time includes waiting
// for the slowest peer, as a real caller would. False when `run` failed (the
// operation, already reported) or the events did.
bool timed_rounds(const TimingConfig& cfg, size_t rounds, cudaStream_t stream,
                  const std::function<bool()>& run, double* median_us) {
  const size_t n = rounds;
  Events start, stop;
  if (!start.create(n) || !stop.create(n)) return false;
  for (size_t i = 0; i < n; ++i) {
    if (!TOOLS_CUDA_OK(cudaEventRecord(start.events[i], stream))) return false;
    if (!run()) return false;
    if (!TOOLS_CUDA_OK(cudaEventRecord(stop.events[i], stream))) return false;
  }
  if (!TOOLS_CUDA_OK(cudaStreamSynchronize(stream))) return false;
  std::vector<double> per_call(n);
  for (size_t i = 0; i < n; ++i) {
    float ms = 0.0f;
    if (!TOOLS_CUDA_OK(cudaEventElapsedTime(&ms, start.events[i], stop.events[i]))) return false;
    per_call[i] = 1e3 * static_cast<double>(ms) / cfg.iters;
  }
  std::sort(per_call.begin(), per_call.end());
  *median_us = n % 2 == 1 ? per_call[n / 2] : 0.5 * (per_call[n / 2 - 1] + per_call[n / 2]);
  return true;
}

}  // namespace

int time_calls(const Enqueue& op, const TimingConfig& cfg, cudaStream_t stream,
               arnorm_tools::HostCollectives& host, TimingResult* result) {
  *result = TimingResult{};
  if (cfg.replays == 0) {
    const bool warm = eager_warmup(op, cfg, stream);
    if (!warm) (void)cudaGetLastError();
    if (host.barrier() != 0) return 1;
    const auto round = [&] {
      for (int i = 0; i < cfg.iters; ++i)
        if (op(stream) != 0) return false;
      return true;
    };
    if (!warm || !timed_rounds(cfg, kEagerRounds, stream, round, &result->median_us)) {
      // (A round that failed part way leaves its calls queued: let them end.)
      (void)cudaStreamSynchronize(stream);
      (void)cudaGetLastError();
      result->op_failed = true;
    }
    return 0;
  }
  Graph graph;
  const bool built = build_graph(op, cfg, stream, &graph);
  // A failed runtime call leaves the per-thread last error set; clear it so
  // the next kernel launch check does not report it again.
  if (!built) (void)cudaGetLastError();
  // Start the timed replays together, so a late rank's startup is not billed
  // to the others.
  if (host.barrier() != 0) return 1;
  const auto replay = [&] { return TOOLS_CUDA_OK(cudaGraphLaunch(graph.exec, stream)); };
  if (!built || !timed_rounds(cfg, static_cast<size_t>(cfg.replays), stream, replay, &result->median_us)) {
    (void)cudaGetLastError();
    result->op_failed = true;
  }
  return 0;
}

}  // namespace arnorm_bench
