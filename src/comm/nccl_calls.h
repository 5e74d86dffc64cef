// NCCL-served work under arnorm's bounds. arnorm's own kernels give up on a
// missing peer by themselves (BOUNDED WAIT, device/sync.cuh); NCCL's kernels
// wait as NCCL does, so a host thread watches them instead (WATCHED CALLS,
// core/call_watchdog.h):
// - an eager call still running on its stream timeout + bytes / 50 MB/s
//   after the stream reached it expires on the watchdog's thread (the bytes
//   term keeps a large call on a slow link from being taken for a lost peer);
// - a call that a nonblocking comm has not enqueued within the timeout of
//   its stream reaching it fails on the spot.
// Either way the communicator records ARNORM_ERROR_PEER_TIMEOUT
// (arnormCommGetAsyncError, and every later operation fails with it) and, if
// arnorm created the NCCL comm, aborts it, which ends its kernels. The abort
// takes nccl_mu, which every NCCL call holds, so it never frees the comm
// under a call. arnorm's comms are blocking (NCCL's default; a nonblocking
// comm runs every collective on a thread of its own, tens of microseconds a
// call), so a call holds the lock only while NCCL enqueues it. A comm the
// caller passed in is the caller's to abort. Calls captured in a CUDA graph
// are not watched.
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
  std::atomic<bool> stopping{false};  // teardown: an expiry still waiting for nccl_mu gives up
  uint64_t watched = 0;   // calls handed to the watchdog
  std::mutex pool_mu;
  std::vector<cudaEvent_t> free_events;
  std::vector<cudaEvent_t> all_events;
  std::unique_ptr<CallWatchdog> watchdog;
  ~NcclWatch();           // stops the watchdog first, then destroys the events
};

// Waits until `r`, the result of an NCCL call on `nccl`, is no longer
// ncclInProgress (a nonblocking comm, NCCL_COMM_BLOCKING=0 included),
// without bound: for creation, which waits for every rank as the bootstrap
// does.
ncclResult_t nccl_settle(ncclComm_t nccl, ncclResult_t r);

// One sum all-reduce on the communicator's NCCL comm for the public call
// `op`, under the bounds above. `capturing`: the stream is being captured
// (no markers, no watchdog).
arnormStatus_t nccl_all_reduce(arnormComm* comm, const void* send, void* recv, size_t count,
                               arnormDataType_t dtype, cudaStream_t stream, bool capturing, const char* op);

// For arnormCommDestroy: stops the watchdog and releases the NCCL comm if
// this communicator owns it and it was not aborted: destroyed if healthy,
// aborted if a call is still pending or the comm reports an error (so that
// teardown never waits on it).
arnormStatus_t release_nccl(arnormComm* comm);

}  // namespace arnorm
