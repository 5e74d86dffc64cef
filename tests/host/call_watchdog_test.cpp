// WATCHED CALLS (core/call_watchdog.h) with made-up markers: flags that the
// test sets where a stream would pass a CUDA event.
#include "core/call_watchdog.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace arnorm {
namespace {

using namespace std::chrono_literals;

struct Markers {
  std::vector<std::unique_ptr<std::atomic<bool>>> flags;
  std::mutex mu;
  std::multiset<void*> released;
  std::atomic<int> expiries{0};
  WatchedCall expired_call{};
  double expired_after = 0;

  void* make() {
    flags.push_back(std::make_unique<std::atomic<bool>>(false));
    return flags.back().get();
  }
  static void pass(void* m) { static_cast<std::atomic<bool>*>(m)->store(true); }
  size_t released_count(void* m) {
    std::lock_guard<std::mutex> lock(mu);
    return released.count(m);
  }
  size_t released_total() {
    std::lock_guard<std::mutex> lock(mu);
    return released.size();
  }
  CallWatchdog::Hooks hooks() {
    CallWatchdog::Hooks h;
    h.passed = [](void* m) { return static_cast<std::atomic<bool>*>(m)->load(); };
    h.release = [this](void* m) {
      std::lock_guard<std::mutex> lock(mu);
      released.insert(m);
    };
    h.expire = [this](const WatchedCall& c, double waited) {
      expired_call = c;
      expired_after = waited;
      expiries.fetch_add(1);
    };
    return h;
  }
};

// Polls `cond` for up to `limit`.
template <class F>
bool eventually(F cond, std::chrono::milliseconds limit = 2000ms) {
  const auto t0 = std::chrono::steady_clock::now();
  while (!cond()) {
    if (std::chrono::steady_clock::now() - t0 > limit) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(CallWatchdog, FinishedCallsAreReleasedInOrderAndNothingExpires) {
  Markers m;
  CallWatchdog w(0.2, m.hooks());
  std::vector<WatchedCall> calls;
  for (uint64_t i = 1; i <= 3; ++i) calls.push_back(WatchedCall{i, "op", m.make(), m.make()});
  for (const auto& c : calls) ASSERT_TRUE(w.watch(c));
  // The second call's markers pass first: it is not released before the
  // first, which is still running (calls finish in the order watched).
  Markers::pass(calls[1].before);
  Markers::pass(calls[1].after);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(0u, m.released_count(calls[1].after));
  EXPECT_EQ(3u, w.pending());
  Markers::pass(calls[0].before);
  Markers::pass(calls[0].after);
  ASSERT_TRUE(eventually([&] { return w.pending() == 1; }));
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(1u, m.released_count(calls[i].before));
    EXPECT_EQ(1u, m.released_count(calls[i].after));
  }
  Markers::pass(calls[2].after);  // a finished call counts as started
  ASSERT_TRUE(eventually([&] { return w.pending() == 0; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(0, m.expiries.load());
  EXPECT_FALSE(w.expired());
}

TEST(CallWatchdog, TheClockStartsWhenTheStreamReachesTheCall) {
  Markers m;
  const double timeout = 0.1;
  CallWatchdog w(timeout, m.hooks());
  const WatchedCall c{7, "arnormAllReduce", m.make(), m.make()};
  ASSERT_TRUE(w.watch(c));
  // Earlier work holds the stream for three timeouts: not the call's fault.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(0, m.expiries.load()) << "time before the stream reached the call counted against it";
  const auto started = std::chrono::steady_clock::now();
  Markers::pass(c.before);
  ASSERT_TRUE(eventually([&] { return m.expiries.load() > 0; }));
  const double seen = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_GE(seen, timeout);
  EXPECT_LT(seen, timeout + 1.0) << "the expiry was not prompt";
  EXPECT_EQ(7u, m.expired_call.seq);
  EXPECT_STREQ("arnormAllReduce", m.expired_call.op);
  EXPECT_GE(m.expired_after, timeout);
  EXPECT_TRUE(w.expired());
  // Once expired: exactly one expiry, and later calls are refused with their
  // markers handed back at once.
  const WatchedCall later{8, "op", m.make(), m.make()};
  EXPECT_FALSE(w.watch(later));
  EXPECT_EQ(1u, m.released_count(later.before));
  EXPECT_EQ(1u, m.released_count(later.after));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(1, m.expiries.load());
}

// watch() never waits, however many calls are held: a caller made to wait
// for room behind a stream that earlier work holds could wait forever. A
// call's own limit replaces the timeout.
TEST(CallWatchdog, WatchNeverWaitsAndACallsLimitCounts) {
  Markers m;
  CallWatchdog w(0.05, m.hooks());
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<WatchedCall> calls;
  for (uint64_t i = 1; i <= 2000; ++i) {
    calls.push_back(WatchedCall{i, "op", m.make(), m.make(), i == 1 ? 0.3 : 0.0});
    ASSERT_TRUE(w.watch(calls.back()));
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.5);
  EXPECT_EQ(2000u, w.pending());
  // The first call starts; its own limit (0.3 s), not the timeout (0.05 s), applies.
  const auto started = std::chrono::steady_clock::now();
  Markers::pass(calls[0].before);
  ASSERT_TRUE(eventually([&] { return m.expiries.load() > 0; }));
  EXPECT_GE(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), 0.3);
  EXPECT_EQ(1u, m.expired_call.seq);
}

TEST(CallWatchdog, StoppingReleasesWhatIsHeldWithoutWaiting) {
  Markers m;
  std::vector<WatchedCall> calls;
  const auto t0 = std::chrono::steady_clock::now();
  {
    CallWatchdog w(60.0, m.hooks());
    for (uint64_t i = 1; i <= 4; ++i) {
      calls.push_back(WatchedCall{i, "op", m.make(), m.make()});
      ASSERT_TRUE(w.watch(calls.back()));
    }
    Markers::pass(calls[0].before);  // running, never finishing
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  EXPECT_EQ(8u, m.released_total());
  for (const auto& c : calls) EXPECT_EQ(2u, m.released_count(c.before) + m.released_count(c.after));
  EXPECT_EQ(0, m.expiries.load());
}

}  // namespace
}  // namespace arnorm
