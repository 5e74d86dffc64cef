#include "comm/communicator.h"

#include <cstddef>

#include "comm/graph_queries.h"
#include "core/graph_ancestry.h"
#include "core/status.h"

arnorm::SyncParams arnormComm::sync_params(int32_t op) const {
  arnorm::SyncParams s{};
  for (int r = 0; r < arnorm::kMaxRanks; ++r) s.ws[r] = peer_workspace[r];
  // Only a communicator with peer memory has a workspace; the norm kernel run
  // after NCCL reads neither pointer.
  if (peer_access && rank < arnorm::kMaxRanks && peer_workspace[rank] != nullptr) {
    s.epochs = reinterpret_cast<uint64_t*>(peer_workspace[rank] + layout.epochs_offset);
    s.control = reinterpret_cast<arnorm::ControlBlock*>(peer_workspace[rank] + layout.control_offset);
  }
  s.layout = layout;
  s.rank = rank;
  s.world = world_size;
  s.timeout_ns = static_cast<uint64_t>(timeout_seconds * 1e9);
  s.error = error_device;
  s.op = op;
  s.phase_clock = phase_clock;
  return s;
}

arnorm::SelectionContext arnormComm::selection_context() const {
  return arnorm::SelectionContext{world_size,     peer_access,    nccl != nullptr,
                                  forced,         forced_protocol, fused_pipeline_bytes};
}

namespace arnorm {

cudaError_t close_peer_mappings(arnormComm* comm) {
  cudaError_t first = cudaSuccess;
  for (int r = 0; r < kMaxRanks; ++r) {
    // A rank of this process lent its address, not an IPC mapping: its owner frees it.
    if (r != comm->rank && comm->peer_workspace[r] != nullptr && !comm->peer_in_process[r]) {
      const cudaError_t e = cudaIpcCloseMemHandle(comm->peer_workspace[r]);
      if (first == cudaSuccess) first = e;
    }
    if (r != comm->rank) comm->peer_workspace[r] = nullptr;
    comm->peer_in_process[r] = false;
  }
  return first;
}

const char* op_code_name(int32_t op) {
  switch (op) {
    case kOpAllReduceOneShot: return "arnormAllReduce (one-shot)";
    case kOpAllReduceTwoShot: return "arnormAllReduce (two-shot)";
    case kOpFusedOneShot: return "arnormAllReduceAddRmsNorm (one-shot)";
    case kOpFusedTwoShot: return "arnormAllReduceAddRmsNorm (two-shot)";
    case kOpFusedOneShotPipelined: return "arnormAllReduceAddRmsNorm (one-shot over the pipeline)";
    default: return "an arnorm operation";
  }
}

arnormStatus_t check_async_error(const arnormComm* comm, const char* op) {
  const int32_t host_status = comm->host_error.status.load(std::memory_order_acquire);
  if (host_status != 0) {
    return ARNORM_FAIL(static_cast<arnormStatus_t>(host_status), "%s refused: %s", op,
                       comm->host_error.message.c_str());
  }
  if (comm->error_host == nullptr) return ARNORM_SUCCESS;
  const volatile ErrorRecord* r = comm->error_host;
  const int32_t status = r->status;
  if (status == 0) return ARNORM_SUCCESS;
  return ARNORM_FAIL(static_cast<arnormStatus_t>(status),
                     "%s refused: an earlier %s (kernel epoch %llu) on rank %d timed out after %.1f s "
                     "waiting for rank %d, which did not arrive in that time. Check that every rank makes "
                     "the same sequence of calls with the same arguments and that rank %d is alive; if it "
                     "was only late (ranks that load or compile unevenly drift apart), raise "
                     "timeout_seconds or ARNORM_TIMEOUT_SECONDS. Then destroy and recreate the communicator",
                     op, op_code_name(r->op), static_cast<unsigned long long>(r->epoch), r->rank,
                     comm->timeout_seconds, r->peer, r->peer);
}

arnormStatus_t concurrent_call_error(const char* op) {
  return ARNORM_FAIL(ARNORM_ERROR_INVALID_USAGE,
                     "%s refused: another thread is inside a call on this communicator. A communicator serves "
                     "one thread at a time: serialise the threads' calls (a mutex), or give each thread a "
                     "communicator of its own. Nothing was launched and the other call goes on; with more than "
                     "one rank, the peers still expect this call and will time out waiting for it",
                     op);
}

namespace {

// CAPTURE ORDER: how far back a captured call looks for the previous one
// before it adds the dependency regardless (a redundant edge is harmless).
constexpr size_t kCaptureOrderMaxVisits = 4096;

bool captured_dependencies(GraphNode node, std::vector<GraphNode>* out) {
  std::vector<cudaGraphNode_t> deps;
  if (node_dependencies(static_cast<cudaGraphNode_t>(const_cast<void*>(node)), &deps) != cudaSuccess) {
    cudaGetLastError();  // leave no stale error for a later check to misreport
    return false;
  }
  out->assign(deps.begin(), deps.end());
  return true;
}

arnormStatus_t order_after_previous_captured_call(arnormComm* comm, CallStream* cs) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaGraphNode_t* deps = nullptr;
  size_t num_deps = 0;
  ARNORM_CUDA_TRY(capture_info(cs->stream, &status, &cs->capture_id, &deps, &num_deps));
  // (An invalidated capture refuses the launch itself, with CUDA's reason.)
  if (status != cudaStreamCaptureStatusActive || cs->capture_id != comm->last_capture_id ||
      comm->last_capture_nodes.empty()) {
    return ARNORM_SUCCESS;
  }
  const std::vector<GraphNode> previous(comm->last_capture_nodes.begin(), comm->last_capture_nodes.end());
  const std::vector<GraphNode> starts(deps, deps + num_deps);
  const Ancestry a = targets_are_ancestors(previous, starts, captured_dependencies, kCaptureOrderMaxVisits);
  if (a == Ancestry::kAll) return ARNORM_SUCCESS;
  ARNORM_CUDA_TRY(add_capture_dependencies(cs->stream, comm->last_capture_nodes));
  log_line(comm->log_level, LogLevel::kInfo,
           "rank %d: a captured call did not depend on the communicator's previous captured call (another "
           "stream of the capture); it was made to, as an eager call would wait for it",
           comm->rank);
  return ARNORM_SUCCESS;
}

}  // namespace

arnormStatus_t order_after_previous_call(arnormComm* comm, cudaStream_t stream, CallStream* cs) {
  cs->stream = stream;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  ARNORM_CUDA_TRY(cudaStreamIsCapturing(stream, &capture));
  cs->capturing = capture != cudaStreamCaptureStatusNone;
  if (cs->capturing) return order_after_previous_captured_call(comm, cs);
  // STREAM ORDER (communicator.h): ids, not handles.
  ARNORM_CUDA_TRY(cudaStreamGetId(stream, &cs->id));
  if (!comm->has_last_stream || cs->id == comm->last_stream_id) return ARNORM_SUCCESS;
  ARNORM_CUDA_TRY(cudaStreamWaitEvent(stream, comm->order_event, 0));
  return ARNORM_SUCCESS;
}

arnormStatus_t note_call_issued(arnormComm* comm, const CallStream& cs, arnormStatus_t issued) {
  if (cs.capturing) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    unsigned long long id = 0;
    const cudaGraphNode_t* deps = nullptr;
    size_t num_deps = 0;
    comm->last_capture_nodes.clear();
    const cudaError_t e = capture_info(cs.stream, &status, &id, &deps, &num_deps);
    if (e != cudaSuccess) {
      cudaGetLastError();  // the call's own status stands; the next captured call is not ordered
    } else if (status == cudaStreamCaptureStatusActive) {
      comm->last_capture_id = id;
      comm->last_capture_nodes.assign(deps, deps + num_deps);
    }
    return issued;
  }
  const cudaError_t e = cudaEventRecord(comm->order_event, cs.stream);
  if (e == cudaSuccess) {
    comm->last_stream_id = cs.id;
    comm->has_last_stream = true;
  }
  // (cudaEventRecord sets no arnorm message: the failed call's stands.)
  if (issued != ARNORM_SUCCESS) return issued;
  if (e != cudaSuccess) {
    return ARNORM_FAIL(ARNORM_ERROR_CUDA, "recording the call's order event failed: %s", cudaGetErrorString(e));
  }
  return ARNORM_SUCCESS;
}

DeviceGuard::DeviceGuard(int device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
  ok_ = previous_ == device || cudaSetDevice(device) == cudaSuccess;
  if (!ok_) cudaGetLastError();  // leave no stale error for a later check to misreport
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

RelaxedCaptureMode::RelaxedCaptureMode() {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  set_ = cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess;
  if (set_) previous_ = mode;
  else cudaGetLastError();
}

RelaxedCaptureMode::~RelaxedCaptureMode() {
  if (set_) cudaThreadExchangeStreamCaptureMode(&previous_);
}

cudaError_t copy_to_host_privately(void* dst, const void* src, size_t bytes) {
  return on_private_stream(
      [&](cudaStream_t s) { return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s); });
}

}  // namespace arnorm

extern "C" arnormStatus_t arnormCommDestroy(arnormComm_t comm) {
  return arnorm::guarded("arnormCommDestroy", [&]() -> arnormStatus_t {
    arnorm::clear_last_error();
    if (comm == nullptr) return ARNORM_SUCCESS;
    arnorm::ExclusiveCall exclusive(comm);
    if (!exclusive.held()) return arnorm::concurrent_call_error("arnormCommDestroy");
    exclusive.keep();  // held until the communicator is freed below
    arnorm::DeviceGuard guard(comm->device);
    const arnorm::RelaxedCaptureMode relaxed;  // CAPTURE-SAFE SET-UP
    arnormStatus_t status = ARNORM_SUCCESS;
    auto note = [&](cudaError_t e, const char* what) {
      if (e != cudaSuccess && status == ARNORM_SUCCESS) {
        status = ARNORM_FAIL(ARNORM_ERROR_CUDA, "arnormCommDestroy: %s failed: %s", what, cudaGetErrorString(e));
      }
    };
    if (comm->probe_stuck) {
      // A kernel of this communicator never finished; every free would wait on it.
      delete comm;
      return ARNORM_FAIL(ARNORM_ERROR_PEER_TIMEOUT,
                         "arnormCommDestroy: the setup probe never finished, so the workspace was left "
                         "allocated (freeing it would wait forever); the process should not reuse this GPU");
    }
    // First: the watchdog must stop before anything it touches goes away.
    status = arnorm::release_nccl(comm);
    note(arnorm::close_peer_mappings(comm), "cudaIpcCloseMemHandle");
    if (comm->phase_clock) {
      arnorm::report_phase_clock(comm);
      note(cudaFree(comm->phase_clock), "cudaFree(phase clock)");
    }
    if (comm->workspace) note(cudaFree(comm->workspace), "cudaFree(workspace)");
    if (comm->error_host) note(cudaFreeHost(comm->error_host), "cudaFreeHost(error record)");
    if (comm->order_event) note(cudaEventDestroy(comm->order_event), "cudaEventDestroy");
    delete comm;
    return status;
  });
}

extern "C" arnormStatus_t arnormCommGetAsyncError(arnormComm_t comm) {
  return arnorm::guarded("arnormCommGetAsyncError", [&]() -> arnormStatus_t {
    arnorm::clear_last_error();
    if (comm == nullptr) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "arnormCommGetAsyncError: comm is NULL");
    }
    return arnorm::check_async_error(comm, "arnormCommGetAsyncError");
  });
}

extern "C" arnormStatus_t arnormCommGetInfo(arnormComm_t comm, arnormCommInfo_t* info) {
  return arnorm::guarded("arnormCommGetInfo", [&]() -> arnormStatus_t {
    arnorm::clear_last_error();
    if (comm == nullptr || info == nullptr) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "arnormCommGetInfo: comm and info must be non-NULL");
    }
    info->rank = comm->rank;
    info->world_size = comm->world_size;
    info->device = comm->device;
    info->peer_access = comm->peer_access ? 1 : 0;
    info->workspace_bytes = comm->peer_access ? comm->layout.total_bytes : 0;
    info->max_blocks = comm->max_blocks;
    return ARNORM_SUCCESS;
  });
}

extern "C" arnormStatus_t arnormCommGetFallbackReason(arnormComm_t comm, const char** reason) {
  return arnorm::guarded("arnormCommGetFallbackReason", [&]() -> arnormStatus_t {
    arnorm::clear_last_error();
    if (comm == nullptr || reason == nullptr) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "arnormCommGetFallbackReason: comm and reason must be non-NULL");
    }
    *reason = comm->fallback_reason.c_str();
    return ARNORM_SUCCESS;
  });
}
