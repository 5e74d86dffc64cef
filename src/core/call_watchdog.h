// WATCHED CALLS: a host thread that bounds the wait of work whose kernels
// arnorm did not write and so cannot bound on the device (NCCL-served calls).
//
// Each watched call has two markers on its stream, one recorded before it and
// one after. A call's clock starts when the stream has passed its first
// marker, so earlier work on the stream (the caller's or not) never counts
// against it, and stops when the stream has passed its second. A call still
// running `timeout` seconds after it started expires: `expire` runs once, on
// the watchdog's thread, and nothing is watched after that.
//
// Only the oldest pending call is polled. That is enough because the
// communicator orders its eager calls one after another (one stream at a
// time, order_after_previous_call), so they finish in the order watched.
// watch() never waits: the calls held are bounded by what the stream can
// have queued, and a caller waiting for room behind a stream that earlier
// work holds could wait forever.
//
// Core logic only (no CUDA): the markers are opaque and the hooks say whether
// the stream has passed one; comm/nccl_calls.cpp supplies CUDA events.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace arnorm {

struct WatchedCall {
  uint64_t seq = 0;        // the communicator's count of watched calls, from 1
  const char* op = "";     // the public call, for the error message
  void* before = nullptr;  // markers, opaque here
  void* after = nullptr;
  double limit = 0;        // seconds this call may run; 0: the watchdog's timeout
};

class CallWatchdog {
 public:
  struct Hooks {
    std::function<void()> thread_start;          // on the watchdog's thread, first (select the device)
    std::function<bool(void* marker)> passed;    // has the stream passed this marker?
    std::function<void(void* marker)> release;   // the watchdog is done with this marker
    // Once, on the watchdog's thread: `call` started `waited` seconds ago and
    // has not finished.
    std::function<void(const WatchedCall& call, double waited)> expire;
  };

  // Starts the thread.
  CallWatchdog(double timeout_seconds, Hooks hooks, double poll_seconds = 0.001);
  // Stops the thread and releases every marker still held. Never waits for
  // a call to finish.
  ~CallWatchdog();
  CallWatchdog(const CallWatchdog&) = delete;
  CallWatchdog& operator=(const CallWatchdog&) = delete;

  // Hands a call's markers to the watchdog; never waits. False once it has
  // expired: the call is not watched and its markers are released here.
  bool watch(const WatchedCall& call);
  bool expired() const;
  size_t pending() const;

 private:
  using Clock = std::chrono::steady_clock;
  void run();

  const double timeout_;
  const double poll_;
  Hooks hooks_;

  mutable std::mutex mu_;
  std::condition_variable work_;  // a call was watched, or stop
  std::deque<WatchedCall> calls_;
  bool stop_ = false;
  bool expired_ = false;
  std::thread thread_;
};

}  // namespace arnorm
