#include "comm/nccl_calls.h"

#include <chrono>
#include <thread>
#include <utility>

#include "comm/communicator.h"
#include "core/dtype.h"
#include "core/status.h"

namespace arnorm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

ncclDataType_t to_nccl(arnormDataType_t t) {
  switch (t) {
    case ARNORM_FLOAT16: return ncclFloat16;
    case ARNORM_BFLOAT16: return ncclBfloat16;
    default: return ncclFloat32;
  }
}

// The first error wins; every writer goes through here.
void record_host_error(arnormComm* c, arnormStatus_t status, std::string message) {
  std::lock_guard<std::mutex> lock(c->host_error_mu);
  if (c->host_error.status.load(std::memory_order_relaxed) != 0) return;
  c->host_error.message = std::move(message);
  c->host_error.status.store(status, std::memory_order_release);
}

// A call that a rank never joined: recorded, with what happens next.
void record_lost_peer(arnormComm* c, const char* op, const std::string& what) {
  record_host_error(
      c, ARNORM_ERROR_PEER_TIMEOUT,
      strprintf("an earlier %s served by NCCL on rank %d %s: some rank never joined it. NCCL does not say "
                "which; the peer-memory algorithms do. Check that every rank makes the same sequence of calls "
                "with the same arguments and is alive (if one was only late, raise timeout_seconds or "
                "ARNORM_TIMEOUT_SECONDS); then %s",
                op, c->rank, what.c_str(),
                c->owns_nccl ? "destroy and recreate the communicator (arnorm aborts the NCCL comm it created, "
                               "which ends its kernels)"
                             : "abort the NCCL comm you passed in (ncclCommAbort; arnorm does not abort a comm "
                               "it does not own), then destroy and recreate the communicator"));
}

// Under nccl_mu: aborts arnorm's own comm, once.
void abort_owned_locked(arnormComm* c) {
  NcclWatch& w = *c->nccl_watch;
  if (!c->owns_nccl || w.aborted || c->nccl == nullptr) return;
  ncclCommAbort(c->nccl);
  w.aborted = true;
}

arnormStatus_t take_event(NcclWatch& w, cudaEvent_t* e) {
  std::lock_guard<std::mutex> lock(w.pool_mu);
  if (!w.free_events.empty()) {
    *e = w.free_events.back();
    w.free_events.pop_back();
    return ARNORM_SUCCESS;
  }
  ARNORM_CUDA_TRY(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
  w.all_events.push_back(*e);
  return ARNORM_SUCCESS;
}

void give_event(NcclWatch& w, cudaEvent_t e) {
  if (e == nullptr) return;
  std::lock_guard<std::mutex> lock(w.pool_mu);
  w.free_events.push_back(e);
}

bool capture_refusal(cudaError_t e) {
  return e == cudaErrorStreamCaptureUnsupported || e == cudaErrorStreamCaptureInvalidated ||
         e == cudaErrorStreamCaptureImplicit;
}

void start_watchdog(arnormComm* c) {
  NcclWatch& w = *c->nccl_watch;
  CallWatchdog::Hooks hooks;
  const int device = c->device;
  hooks.thread_start = [device] {
    cudaSetDevice(device);
    // Relaxed: the queries below must not break a capture that the
    // caller's threads run in global mode meanwhile (nor be refused by it).
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
  };
  hooks.passed = [](void* m) {
    const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(m));
    if (e == cudaSuccess) return true;
    cudaGetLastError();
    // Not ready, or refused for a capture somewhere: ask again. Any other
    // error is the device's (sticky): the call will not finish, and its
    // error surfaces on the caller's stream, not here.
    return !(e == cudaErrorNotReady || capture_refusal(e));
  };
  hooks.release = [&w](void* m) { give_event(w, static_cast<cudaEvent_t>(m)); };
  hooks.expire = [c](const WatchedCall& call, double waited) {
    record_lost_peer(c, call.op,
                     strprintf("(watched call %llu) was still running %.1f s after its stream reached it",
                               static_cast<unsigned long long>(call.seq), waited));
    if (!c->owns_nccl) return;
    // The caller's thread may be inside NCCL's host code with the lock held
    // (a blocking comm enqueueing): abort between its calls, never under one.
    NcclWatch& nw = *c->nccl_watch;
    while (!nw.stopping.load()) {
      std::unique_lock<std::mutex> lock(nw.nccl_mu, std::try_to_lock);
      if (lock.owns_lock()) {
        abort_owned_locked(c);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  w.watchdog = std::make_unique<CallWatchdog>(c->timeout_seconds, std::move(hooks));
}

}  // namespace

NcclWatch::~NcclWatch() {
  stopping = true;
  watchdog.reset();
  for (cudaEvent_t e : all_events) cudaEventDestroy(e);
}

ncclResult_t nccl_settle(ncclComm_t nccl, ncclResult_t r) {
  while (r == ncclInProgress) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(nccl, &state);
    r = q != ncclSuccess ? q : state;
  }
  return r;
}

arnormStatus_t nccl_all_reduce(arnormComm* c, const void* send, void* recv, size_t count, arnormDataType_t dtype,
                               cudaStream_t stream, bool capturing, const char* op) {
  if (!c->nccl_watch) c->nccl_watch = std::make_unique<NcclWatch>();
  NcclWatch& w = *c->nccl_watch;
  cudaEvent_t before = nullptr, after = nullptr;
  auto drop_markers = [&] {
    give_event(w, before);
    give_event(w, after);
  };
  if (!capturing) {
    arnormStatus_t st = take_event(w, &before);
    if (st == ARNORM_SUCCESS) st = take_event(w, &after);
    if (st != ARNORM_SUCCESS) {
      drop_markers();
      return st;
    }
  }
  std::unique_lock<std::mutex> lock(w.nccl_mu);
  // Every early return: the lock and the markers go back, the status stays.
  auto leave = [&](arnormStatus_t status) {
    lock.unlock();
    drop_markers();
    return status;
  };
  auto refuse = [&] { return leave(check_async_error(c, op)); };
  if (w.aborted || c->host_error.status.load(std::memory_order_acquire) != 0) return refuse();
  if (before != nullptr && cudaEventRecord(before, stream) != cudaSuccess) {
    return leave(ARNORM_FAIL(ARNORM_ERROR_CUDA, "%s: cudaEventRecord before the NCCL call failed: %s", op,
                             cudaGetErrorString(cudaGetLastError())));
  }
  ncclResult_t r = ncclAllReduce(send, recv, count, to_nccl(dtype), ncclSum, c->nccl, stream);
  // A nonblocking comm answers ncclInProgress while NCCL enqueues the call
  // on a thread of its own (connecting to peers on a first call). Polled
  // with the lock released between polls; the clock starts when the stream
  // reaches the call, as the watchdog's does (or now, under capture).
  auto t0 = Clock::now();
  for (int polls = 0; r == ncclInProgress; ++polls) {
    lock.unlock();
    if (polls < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    lock.lock();
    if (w.aborted || c->host_error.status.load(std::memory_order_acquire) != 0) return refuse();
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(c->nccl, &state);
    r = q != ncclSuccess ? q : state;
    if (before != nullptr && cudaEventQuery(before) == cudaErrorNotReady) t0 = Clock::now();
    if (r == ncclInProgress && seconds_since(t0) > c->timeout_seconds) {
      record_lost_peer(c, op,
                       strprintf("had not been enqueued by NCCL %.1f s after its stream reached it",
                                 seconds_since(t0)));
      abort_owned_locked(c);
      return refuse();
    }
  }
  if (r != ncclSuccess) {
    // On arnorm's own comm an NCCL error is fatal to the comm: recorded, and
    // the comm aborted (destroying a comm in error would free nothing).
    if (c->owns_nccl) {
      record_host_error(c, ARNORM_ERROR_NCCL,
                        strprintf("an earlier %s failed in NCCL on rank %d (%s); arnorm aborted the NCCL comm it "
                                  "had created: destroy and recreate the communicator",
                                  op, c->rank, ncclGetErrorString(r)));
      abort_owned_locked(c);
    }
    return leave(ARNORM_FAIL(ARNORM_ERROR_NCCL, "%s: ncclAllReduce failed: %s", op, ncclGetErrorString(r)));
  }
  if (after != nullptr && cudaEventRecord(after, stream) != cudaSuccess) {
    return leave(ARNORM_FAIL(ARNORM_ERROR_CUDA, "%s: cudaEventRecord after the NCCL call failed: %s", op,
                             cudaGetErrorString(cudaGetLastError())));
  }
  lock.unlock();
  if (capturing) return ARNORM_SUCCESS;
  if (!w.watchdog) start_watchdog(c);
  // A large call on a slow link is not a lost peer: 50 MB/s of the call's
  // bytes on top of the timeout (4 GiB: 86 s more).
  const double limit = c->timeout_seconds + static_cast<double>(count * dtype_size(dtype)) / 50e6;
  if (!w.watchdog->watch(WatchedCall{++w.watched, op, before, after, limit})) return check_async_error(c, op);
  return ARNORM_SUCCESS;
}

arnormStatus_t release_nccl(arnormComm* c) {
  bool aborted = false, pending = false;
  if (c->nccl_watch) {
    NcclWatch& w = *c->nccl_watch;
    if (w.watchdog) {
      // Calls that have finished leave the queue within a poll or two: wait
      // that long, so that a healthy comm is destroyed, not aborted.
      for (int i = 0; i < 50 && w.watchdog->pending() > 0 && !w.watchdog->expired(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      pending = w.watchdog->pending() > 0;
    }
    w.stopping = true;
    w.watchdog.reset();  // nothing can expire (and abort) from here on
    aborted = w.aborted;
  }
  arnormStatus_t status = ARNORM_SUCCESS;
  if (c->owns_nccl && c->nccl != nullptr && !aborted) {
    // ncclCommDestroy would wait for a call that never finishes, and frees
    // nothing of a comm in error: abort those instead.
    ncclResult_t state = ncclSuccess;
    const bool errored = ncclCommGetAsyncError(c->nccl, &state) != ncclSuccess || state != ncclSuccess;
    const bool stuck = pending || errored || c->host_error.status.load(std::memory_order_acquire) != 0;
    const ncclResult_t r = stuck ? ncclCommAbort(c->nccl) : ncclCommDestroy(c->nccl);
    if (r != ncclSuccess) {
      status = ARNORM_FAIL(ARNORM_ERROR_NCCL, "arnormCommDestroy: %s failed: %s",
                           stuck ? "ncclCommAbort" : "ncclCommDestroy", ncclGetErrorString(r));
    }
  }
  c->nccl = nullptr;
  c->nccl_watch.reset();
  return status;
}

}  // namespace arnorm
