// The host object behind arnormComm_t: owns the workspace, the peer
// mappings, the NCCL comm (if any), the error record and the selection
// table. Kernels get plain values from it (SyncParams), never the object.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "arnorm/arnorm.h"
#include "comm/nccl_calls.h"
#include "core/log.h"
#include "core/selection.h"
#include "core/workspace_layout.h"
#include "device/kernel_params.h"

struct arnormComm {
  int rank = 0;
  int world_size = 0;
  int device = -1;
  bool peer_access = false;
  int max_blocks = 0;
  double timeout_seconds = 0;
  arnorm::WorkspaceLayout layout{};

  bool probe_stuck = false;  // the setup probe never finished: teardown must not free (it would wait forever)
  char* workspace = nullptr;                     // local, cudaMalloc'd
  char* peer_workspace[arnorm::kMaxRanks] = {};  // mapped peers; [rank] = workspace
  bool peer_in_process[arnorm::kMaxRanks] = {};  // a rank of this process: its address, no IPC mapping

  ncclComm_t nccl = nullptr;
  bool owns_nccl = false;  // created by arnorm (nonblocking): destroyed, or aborted by the watchdog, here
  // WATCHED CALLS (comm/nccl_calls.h): made at the first NCCL-served call.
  std::unique_ptr<arnorm::NcclWatch> nccl_watch;
  // An error the host found after the call that caused it had returned (an
  // NCCL-served call that never finished); checked with error_host's.
  std::mutex host_error_mu;
  arnorm::HostAsyncError host_error;

  arnorm::ErrorRecord* error_host = nullptr;  // mapped pinned memory
  arnorm::ErrorRecord* error_device = nullptr;
  // PHASE CLOCK (device/phase_clock.cuh): kPhaseClockWords of device memory
  // in a build with ARNORM_PHASE_TIMING, else nullptr.
  unsigned long long* phase_clock = nullptr;

  arnorm::SelectionTable table;
  arnormAlgorithm_t forced = ARNORM_ALGO_AUTO;  // ARNORM_ALGO at creation
  arnorm::Protocol forced_protocol = arnorm::Protocol::kAuto;  // ARNORM_PROTOCOL at creation
  int fused_lag = 1;  // fused two-shot: steps between push and reduce (ARNORM_FUSED_LAG, 1..8)
  bool fused_pairs = true;  // fused two-shot: two rows at once in the epilogue where they fit (ARNORM_FUSED_PAIRS=0: one)
  int fused_ahead = 2;  // fused two-shot: steps the movers may run ahead of the epilogue beyond lag (ARNORM_FUSED_AHEAD)
  // fused two-shot ring, measurement knobs (0: the planner's choice): at most
  // this many slots per CTA (ARNORM_FUSED_RING_SLOTS, agreed at creation) and
  // a publication at least every this many rows (ARNORM_FUSED_RING_PUBLISH)
  size_t fused_ring_slots = 0;
  size_t fused_ring_publish = 0;
  // 2 ranks: fused one-shot calls of more bytes per rank run over the
  // two-shot's pipeline (ARNORM_FUSED_PIPELINE_BYTES, agreed at creation)
  uint64_t fused_pipeline_bytes = arnorm::kFusedOneShotPipelineMinBytes;
  bool fused_wide = true;  // split one-shot rows of a cluster of two in one CTA (ARNORM_FUSED_WIDE=0: clusters)
  bool pdl = true;  // programmatic dependent launch of the peer kernels (ARNORM_PDL=0 turns it off)
  int gpu_share = 1;  // SHARED GPU (create.cpp): ranks of this process on this GPU, running at once
  arnorm::LogLevel log_level = arnorm::LogLevel::kWarn;  // ARNORM_DEBUG (core/log.h)
  std::string table_source;  // "built-in", or the tuning file over it (for the log)
  std::string fallback_reason;  // why there is no peer memory; empty when there is (arnormCommGetFallbackReason)

  // STREAM ORDER: a call on another stream than the previous eager call
  // waits for order_event, recorded right after that call. Streams are told
  // apart by cudaStreamGetId, never by handle: cudaStreamPerThread is one
  // handle for a different stream on every thread, and a stream created
  // after the previous one was destroyed may reuse its address.
  unsigned long long last_stream_id = 0;
  bool has_last_stream = false;
  cudaEvent_t order_event = nullptr;

  // CAPTURE ORDER: the same promise for calls captured into one graph. A
  // captured call whose stream does not already depend on the previous
  // captured call of the same capture gets those nodes added to its stream's
  // dependencies, so that a replay cannot run the two at once. Node handles
  // stay valid while the capture is in progress (CUDA permits no node
  // removal then), and the capture id tells a new capture from the old one.
  unsigned long long last_capture_id = 0;
  std::vector<cudaGraphNode_t> last_capture_nodes;  // the stream's dependencies right after that call

  // ONE CALLER AT A TIME: held by the thread inside an operation (or
  // destroy), so that a second thread is refused (ExclusiveCall) instead of
  // racing on the stream order, the watchdog and the epoch of the calls.
  std::atomic<bool> in_call{false};

  arnorm::SyncParams sync_params(int32_t op) const;
  arnorm::SelectionContext selection_context() const;
};

namespace arnorm {

// Fails with the recorded asynchronous error, naming the op and ranks.
arnormStatus_t check_async_error(const arnormComm* comm, const char* op);

// STREAM ORDER: where the call's stream is not capturing, makes it wait for
// the previous eager call when it is another stream; CAPTURE ORDER: where it
// is capturing, makes it depend on the previous call captured into the same
// graph when it does not already. *call_stream carries what note_call_issued
// needs after the call was issued.
struct CallStream {
  cudaStream_t stream = nullptr;
  bool capturing = false;
  unsigned long long id = 0;          // cudaStreamGetId, outside capture
  unsigned long long capture_id = 0;  // cudaStreamGetCaptureInfo, under capture
};
arnormStatus_t order_after_previous_call(arnormComm* comm, cudaStream_t stream, CallStream* call_stream);
// Records the call's end on its stream (eager: an event; captured: the
// stream's dependency nodes) as the next call's order point, on
// success and on failure alike: a call that failed part way may have queued
// work (earlier chunks, the NCCL half of a fused call), which the next call
// must still follow. Returns `issued` (its message kept) unless that was a
// success and the recording failed.
arnormStatus_t note_call_issued(arnormComm* comm, const CallStream& call_stream, arnormStatus_t issued);

// ONE CALLER AT A TIME (arnormComm::in_call): taken for the scope of an
// operation when no other thread holds it. acquire/release: a thread that
// takes it sees every host-side write of the previous holder (the order
// event's stream, the watchdog's state).
class ExclusiveCall {
 public:
  explicit ExclusiveCall(arnormComm* comm)
      : comm_(comm), held_(!comm->in_call.exchange(true, std::memory_order_acquire)) {}
  ~ExclusiveCall() {
    if (held_) comm_->in_call.store(false, std::memory_order_release);
  }
  ExclusiveCall(const ExclusiveCall&) = delete;
  ExclusiveCall& operator=(const ExclusiveCall&) = delete;
  bool held() const { return held_; }
  // Keeps it taken for good (destroy: the communicator is freed while held,
  // so a racing call is refused until then, never let in half way).
  void keep() { held_ = false; }

 private:
  arnormComm* comm_;
  bool held_;
};

// The INVALID_USAGE error of a call refused by ExclusiveCall.
arnormStatus_t concurrent_call_error(const char* op);

// Sets the current device for the scope and restores the caller's on exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  bool ok() const { return ok_; }

 private:
  int previous_ = -1;
  bool ok_ = false;
};

// CAPTURE-SAFE SET-UP. Creation and teardown allocate, free, copy and wait,
// which CUDA refuses while any stream of the process captures in global mode:
// the call fails and the capture is invalidated (vllm#55973). With the
// calling thread in relaxed capture mode for the scope, those calls are not
// refused and touch no capture, provided none of them uses the legacy stream
// (a capturing blocking stream would take it into its capture): set-up's
// copies, memsets and waits run on private non-blocking streams. Restores the
// thread's previous mode on exit.
class RelaxedCaptureMode {
 public:
  RelaxedCaptureMode();
  ~RelaxedCaptureMode();
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  cudaStreamCaptureMode previous_ = cudaStreamCaptureModeGlobal;
  bool set_ = false;
};

// Runs work(stream) on a private non-blocking stream and waits for it
// (CAPTURE-SAFE SET-UP: never the legacy stream); the first error wins.
template <typename Work>
cudaError_t on_private_stream(Work work) {
  cudaStream_t stream = nullptr;
  cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) return e;
  e = work(stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  return e;
}

// Copies device memory to the host through on_private_stream.
cudaError_t copy_to_host_privately(void* dst, const void* src, size_t bytes);

// Closes the IPC mappings of the peers' workspaces (not the addresses that
// ranks of this process lent) and forgets every peer's; returns the first
// CUDA error, after trying them all.
cudaError_t close_peer_mappings(arnormComm* comm);

const char* op_code_name(int32_t op);

// PHASE CLOCK report (comm/phase_report.cpp): per operation with recorded
// calls, one line on stderr with the median cycles between successive marks.
// Nothing without a phase_clock buffer. Called at arnormCommDestroy.
void report_phase_clock(const arnormComm* comm);

}  // namespace arnorm
