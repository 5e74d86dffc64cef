#include "comm/nccl_calls.h"

#include <chrono>
#include <thread>
#include <utility>

#include "comm/communicator.h"
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

// A call that a rank never joined: record it and, on a comm arnorm created,
// abort the comm, which ends its kernels on this rank. The caller holds
// nccl_mu where the comm is arnorm's (so no call is using it).
void give_up(arnormComm* c, const char* op, const std::string& what) {
  NcclWatch& w = *c->nccl_watch;
  const bool abort = c->owns_nccl && !w.aborted;
  record_host_error(
      c, ARNORM_ERROR_PEER_TIMEOUT,
      strprintf("an earlier %s served by NCCL on rank %d %s (timeout %.1f s): some rank never joined it. NCCL "
                "does not say which; the peer-memory algorithms do. Check that every rank makes the same "
                "sequence of calls with the same arguments and is alive; then %s",
                op, c->rank, what.c_str(), c->timeout_seconds,
                abort || w.aborted ? "destroy and recreate the communicator (arnorm aborted the NCCL comm it "
                                     "had created, which ended its kernels)"
                                   : "abort the NCCL comm you passed in (ncclCommAbort; arnorm does not abort "
                                     "a comm it does not own), then destroy and recreate the communicator"));
  if (abort) {
    ncclCommAbort(c->nccl);
    w.aborted = true;
  }
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

void start_watchdog(arnormComm* c) {
  NcclWatch& w = *c->nccl_watch;
  CallWatchdog::Hooks hooks;
  const int device = c->device;
  hooks.thread_start = [device] { cudaSetDevice(device); };
  // An error from the query (not "not ready") says nothing about the call;
  // the call's own error surfaces on the caller's stream.
  hooks.passed = [](void* m) { return cudaEventQuery(static_cast<cudaEvent_t>(m)) != cudaErrorNotReady; };
  hooks.release = [&w](void* m) { give_event(w, static_cast<cudaEvent_t>(m)); };
  hooks.expire = [c](const WatchedCall& call, double waited) {
    NcclWatch& nw = *c->nccl_watch;
    // A comm the caller owns is never aborted here, so its lock is not
    // needed (a blocking comm may hold a call in NCCL's host code).
    std::unique_lock<std::mutex> lock(nw.nccl_mu, std::defer_lock);
    if (c->owns_nccl) lock.lock();
    give_up(c, call.op,
            strprintf("(watched call %llu) was still running %.1f s after its stream reached it",
                      static_cast<unsigned long long>(call.seq), waited));
  };
  w.watchdog = std::make_unique<CallWatchdog>(c->timeout_seconds, std::move(hooks));
}

}  // namespace

NcclWatch::~NcclWatch() {
  watchdog.reset();
  for (cudaEvent_t e : all_events) cudaEventDestroy(e);
}

ncclResult_t nccl_settle(ncclComm_t nccl, ncclResult_t r, double seconds) {
  const auto t0 = Clock::now();
  while (r == ncclInProgress) {
    if (seconds > 0 && seconds_since(t0) > seconds) return ncclInProgress;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(nccl, &state);
    r = q != ncclSuccess ? q : state;
  }
  return r;
}

arnormStatus_t nccl_init_nonblocking(ncclComm_t* out, int world, const ncclUniqueId& id, int rank, double seconds,
                                     const char* op) {
  *out = nullptr;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t nccl = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&nccl, world, id, rank, &config);
  if (nccl != nullptr) r = nccl_settle(nccl, r, seconds);
  if (r == ncclInProgress) {
    ncclCommAbort(nccl);
    return ARNORM_FAIL(ARNORM_ERROR_PEER_TIMEOUT,
                       "%s: the NCCL comm of %d ranks was not initialised %.1f s after rank %d asked for it: some "
                       "rank never joined (NCCL does not say which); the comm was aborted",
                       op, world, seconds, rank);
  }
  if (r != ncclSuccess) {
    if (nccl != nullptr) ncclCommAbort(nccl);
    return ARNORM_FAIL(ARNORM_ERROR_NCCL, "%s: ncclCommInitRankConfig failed: %s", op, ncclGetErrorString(r));
  }
  *out = nccl;
  return ARNORM_SUCCESS;
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
  auto refuse = [&] {
    lock.unlock();
    drop_markers();
    return check_async_error(c, op);
  };
  if (w.aborted) return refuse();
  if (before != nullptr && cudaEventRecord(before, stream) != cudaSuccess) {
    lock.unlock();
    drop_markers();
    return ARNORM_FAIL(ARNORM_ERROR_CUDA, "%s: cudaEventRecord before the NCCL call failed: %s", op,
                       cudaGetErrorString(cudaGetLastError()));
  }
  const auto t0 = Clock::now();
  ncclResult_t r = ncclAllReduce(send, recv, count, to_nccl(dtype), ncclSum, c->nccl, stream);
  // A nonblocking comm may still be connecting to its peers: poll with the
  // lock released between polls, so that the watchdog can abort meanwhile.
  while (r == ncclInProgress) {
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::microseconds(20));
    lock.lock();
    if (w.aborted) return refuse();
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(c->nccl, &state);
    r = q != ncclSuccess ? q : state;
    if (r == ncclInProgress && seconds_since(t0) > c->timeout_seconds) {
      give_up(c, op, strprintf("had not been enqueued by NCCL %.1f s after the call", seconds_since(t0)));
      return refuse();
    }
  }
  if (r != ncclSuccess) {
    lock.unlock();
    drop_markers();
    return ARNORM_FAIL(ARNORM_ERROR_NCCL, "%s: ncclAllReduce failed: %s", op, ncclGetErrorString(r));
  }
  if (after != nullptr && cudaEventRecord(after, stream) != cudaSuccess) {
    lock.unlock();
    drop_markers();
    return ARNORM_FAIL(ARNORM_ERROR_CUDA, "%s: cudaEventRecord after the NCCL call failed: %s", op,
                       cudaGetErrorString(cudaGetLastError()));
  }
  lock.unlock();
  if (capturing) return ARNORM_SUCCESS;
  if (!w.watchdog) start_watchdog(c);
  if (!w.watchdog->watch(WatchedCall{++w.watched, op, before, after})) return check_async_error(c, op);
  return ARNORM_SUCCESS;
}

arnormStatus_t release_nccl(arnormComm* c) {
  bool aborted = false, pending = false;
  if (c->nccl_watch) {
    NcclWatch& w = *c->nccl_watch;
    pending = w.watchdog && w.watchdog->pending() > 0;
    w.watchdog.reset();  // nothing can expire (and abort) from here on
    aborted = w.aborted;
  }
  arnormStatus_t status = ARNORM_SUCCESS;
  if (c->owns_nccl && c->nccl != nullptr && !aborted) {
    // A comm with a call that never finished would make ncclCommDestroy
    // wait for it: abort instead.
    const bool stuck = pending || c->host_error.status.load(std::memory_order_acquire) != 0;
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
