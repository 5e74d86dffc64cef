// NCCL-served work under arnorm's bounds. arnorm's own kernels give up on a
// missing peer by themselves (BOUNDED WAIT, device/sync.cuh); NCCL's kernels
// wait as NCCL does, so a host thread watches them instead (WATCHED CALLS,
// core/call_watchdog.h):
// - a call that NCCL has not even enqueued within the timeout (a
//   nonblocking comm's ncclInProgress: connecting to peers that never come)
//   fails on the spot with ARNORM_ERROR_PEER_TIMEOUT;
// - an eager call still running on its stream `timeout` seconds after the
//   stream reached it expires on the watchdog's thread.
// Either way the communicator records the error (arnormCommGetAsyncError,
// and every later operation fails with it) and, if arnorm created the NCCL
// comm, aborts it, which ends its kernels. A comm the caller passed in is
// the caller's to abort. Calls captured in a CUDA graph are not watched.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "arnorm/arnorm.h"
#include "core/call_watchdog.h"

struct arnormComm;

namespace arnorm {

// An error found on the host, after the call that caused it had returned:
// written once (message first, then status with release order), read by
// check_async_error from any thread.
struct HostAsyncError {
  std::atomic<int32_t> status{0};
  std::string message;
};

// What the communicator holds for its NCCL comm: the lock that keeps an
// abort from freeing the comm under a call that is using it, and the
// watchdog with its pool of event markers, started at the first eager call.
struct NcclWatch {
  std::mutex nccl_mu;     // held across every NCCL call on the comm and the abort
  bool aborted = false;   // under nccl_mu: the comm is gone (ncclCommAbort frees it)
  uint64_t watched = 0;   // calls handed to the watchdog
  std::mutex pool_mu;
  std::vector<cudaEvent_t> free_events;
  std::vector<cudaEvent_t> all_events;
  std::unique_ptr<CallWatchdog> watchdog;
  ~NcclWatch();           // stops the watchdog first, then destroys the events
};

// Creates an NCCL comm in nonblocking mode (so that a watchdog may abort it
// while a call is in progress) and waits for its initialisation, at most
// `seconds` when positive, else as long as NCCL takes. On expiry the comm is
// aborted and the call fails with ARNORM_ERROR_PEER_TIMEOUT naming `op`.
arnormStatus_t nccl_init_nonblocking(ncclComm_t* out, int world, const ncclUniqueId& id, int rank,
                                     double seconds, const char* op);

// Waits until `r`, the result of an NCCL call on `nccl`, is no longer
// ncclInProgress: at most `seconds` when positive, else without bound.
// Returns the settled result, or ncclInProgress on expiry.
ncclResult_t nccl_settle(ncclComm_t nccl, ncclResult_t r, double seconds);

// One sum all-reduce on the communicator's NCCL comm for the public call
// `op`, under the bounds above. `capturing`: the stream is being captured
// (no markers, no watchdog).
arnormStatus_t nccl_all_reduce(arnormComm* comm, const void* send, void* recv, size_t count,
                               arnormDataType_t dtype, cudaStream_t stream, bool capturing, const char* op);

// For arnormCommDestroy: stops the watchdog and releases the NCCL comm if
// this communicator owns it and it was not aborted.
arnormStatus_t release_nccl(arnormComm* comm);

}  // namespace arnorm
