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

// Warmup, capture, instantiate and one untimed replay. False when the
// operation failed (already reported); the stream is then out of capture.
bool build_graph(const Enqueue& op, const TimingConfig& cfg, cudaStream_t stream, Graph* g) {
  for (int i = 0; i < cfg.warmup; ++i)
    if (op(stream) != 0) return false;
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

bool timed_replays(const TimingConfig& cfg, cudaStream_t stream, const Graph& g,
                   double* median_us) {
  const size_t n = static_cast<size_t>(cfg.replays);
  Events start, stop;
  if (!start.create(n) || !stop.create(n)) return false;
  // Back to back, no barrier in between: each replay's time includes waiting
  // for the slowest peer, as a real caller would.
  for (size_t i = 0; i < n; ++i) {
    if (!TOOLS_CUDA_OK(cudaEventRecord(start.events[i], stream))) return false;
    if (!TOOLS_CUDA_OK(cudaGraphLaunch(g.exec, stream))) return false;
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

int time_in_graph(const Enqueue& op, const TimingConfig& cfg, cudaStream_t stream,
                  arnorm_tools::HostCollectives& host, TimingResult* result) {
  *result = TimingResult{};
  Graph graph;
  const bool built = build_graph(op, cfg, stream, &graph);
  // A failed runtime call leaves the per-thread last error set; clear it so
  // the next kernel launch check does not report it again.
  if (!built) (void)cudaGetLastError();
  // Start the timed replays together, so a late rank's startup is not billed
  // to the others.
  if (host.barrier() != 0) return 1;
  if (!built || !timed_replays(cfg, stream, graph, &result->median_us)) {
    (void)cudaGetLastError();
    result->op_failed = true;
  }
  return 0;
}

}  // namespace arnorm_bench
