#include "core/call_watchdog.h"

#include <utility>

namespace arnorm {

CallWatchdog::CallWatchdog(double timeout_seconds, Hooks hooks, double poll_seconds)
    : timeout_(timeout_seconds),
      poll_(poll_seconds),
      hooks_(std::move(hooks)),
      thread_([this] { run(); }) {}

CallWatchdog::~CallWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (const WatchedCall& c : calls_) {
    hooks_.release(c.before);
    hooks_.release(c.after);
  }
}

bool CallWatchdog::watch(const WatchedCall& call) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_ || expired_) {
    lock.unlock();
    hooks_.release(call.before);
    hooks_.release(call.after);
    return false;
  }
  calls_.push_back(call);
  lock.unlock();
  work_.notify_one();
  return true;
}

bool CallWatchdog::expired() const {
  std::lock_guard<std::mutex> lock(mu_);
  return expired_;
}

size_t CallWatchdog::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

// The oldest call is the only one polled (calls finish in the order
// watched). Its markers are polled without the lock, so watch() never waits
// behind a poll; only this thread pops, so the front stays the same call.
void CallWatchdog::run() {
  if (hooks_.thread_start) hooks_.thread_start();
  const auto poll = std::chrono::duration<double>(poll_);
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t started_seq = 0;  // the call whose start was seen, and when
  Clock::time_point started_at{};
  while (true) {
    work_.wait(lock, [&] { return stop_ || !calls_.empty(); });
    if (stop_) return;
    const WatchedCall front = calls_.front();
    lock.unlock();
    const bool finished = hooks_.passed(front.after);
    const bool started = finished || hooks_.passed(front.before);
    const auto now = Clock::now();
    if (started && started_seq != front.seq) {
      started_seq = front.seq;
      started_at = now;
    }
    const double waited = started ? std::chrono::duration<double>(now - started_at).count() : 0.0;
    if (finished) {
      hooks_.release(front.before);
      hooks_.release(front.after);
      lock.lock();
      calls_.pop_front();
      continue;
    }
    if (started && waited > (front.limit > 0 ? front.limit : timeout_)) {
      hooks_.expire(front, waited);  // first: a refused watch() finds the error recorded
      lock.lock();
      expired_ = true;
      // Nothing more is watched; the markers held are released at stop.
      work_.wait(lock, [&] { return stop_; });
      return;
    }
    std::this_thread::sleep_for(poll);
    lock.lock();
  }
}

}  // namespace arnorm
