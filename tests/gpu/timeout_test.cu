// Runs last (its file is linked last): a peer that never arrives. After
// this test the ranks' communicator states differ, so nothing may follow it.
#include <chrono>
#include <thread>

#include "harness.h"

namespace arnorm_test {
namespace {

// A communicator of its own with a 1 s timeout: after a test here its
// state differs between ranks, so no other test may use it. `nccl`: the
// NCCL comm it is given (nullptr: arnorm makes its own where it needs one).
void create_private_comm(arnormComm_t* c, ncclComm_t nccl = env().nccl) {
  arnormConfig_t cfg = ARNORM_CONFIG_INIT;
  cfg.timeout_seconds = 1.0;
  cfg.nccl_comm = nccl;
  arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, env().host};
  ARNORM_OK(arnormCommCreate(c, rank(), world(), env().ctx.device, bs, &cfg));
}

// NaNs among the first n bf16 values of a device buffer.
size_t nan_count(const DeviceBuffer& b, size_t n) {
  std::vector<__nv_bfloat16> got(n);
  cudaMemcpy(got.data(), b.ptr, n * 2, cudaMemcpyDeviceToHost);
  size_t nan = 0;
  for (auto v : got) nan += __bfloat162float(v) != __bfloat162float(v);
  return nan;
}

// Rank 0, after its plain all-reduce of n elements by `algo` on `c` (alone):
// the stream gave up within the bound, the error names the algorithm and a
// missing rank, and the whole output is NaN.
void expect_timed_out(arnormComm_t c, const char* algo, std::chrono::steady_clock::time_point t0,
                      const DeviceBuffer& out, size_t n) {
  EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 5.0) << "the wait was not bounded (" << algo << ", n=" << n << ")";
  EXPECT_EQ(ARNORM_ERROR_PEER_TIMEOUT, arnormCommGetAsyncError(c)) << algo << ", n=" << n;
  const std::string msg = arnormGetLastErrorString();
  EXPECT_NE(std::string::npos, msg.find("waiting for rank ")) << msg;
  EXPECT_NE(std::string::npos, msg.find(algo)) << msg;
  EXPECT_EQ(n, nan_count(out, n)) << "a timed-out call must not leave plausible data (" << algo << ", n=" << n << ")";
}

// Last: rank 0 calls alone on a private communicator; the kernel must give
// up within the timeout, name a missing rank, poison the output with NaN and
// make every later call fail at once. Rank 0 queues a second call before the
// first has failed: once aborted, that kernel must neither push nor signal,
// so when the other ranks later make the same two calls, their first
// completes (rank 0 had pushed and signalled it) and their second times out
// naming rank 0, instead of completing on a dead rank's stale signals.
TEST(ZZ_Timeout, MissingPeerIsReportedNotHung) {
  ARNORM_SKIP_WITHOUT_PEERS();
  arnormComm_t c = nullptr;
  ASSERT_NO_FATAL_FAILURE(create_private_comm(&c));
  const size_t n = 8192;
  DeviceBuffer in(n * 2), out(n * 2);
  cudaMemset(in.ptr, 0, n * 2);
  cudaDeviceSynchronize();
  if (rank() == 0) {
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_ONESHOT, env().stream));
    DeviceBuffer out2(n * 2);
    EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduce(c, in.ptr, out2.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_ONESHOT, env().stream));
    expect_timed_out(c, "one-shot", t0, out, n);
    EXPECT_EQ(ARNORM_ERROR_PEER_TIMEOUT,
              arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_ONESHOT, env().stream));
  }
  cudaDeviceSynchronize();
  barrier();
  if (rank() != 0) {
    ARNORM_OK(arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_ONESHOT, env().stream));
    EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
    EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetAsyncError(c)) << "rank 0 pushed and signalled the first call";
    ARNORM_OK(arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_ONESHOT, env().stream));
    EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
    EXPECT_EQ(ARNORM_ERROR_PEER_TIMEOUT, arnormCommGetAsyncError(c))
        << "an aborted rank's queued call must not satisfy its peers";
    EXPECT_NE(std::string::npos, std::string(arnormGetLastErrorString()).find("waiting for rank 0"))
        << arnormGetLastErrorString();
  }
  cudaDeviceSynchronize();
  barrier();
  arnormCommDestroy(c);
}

// Last too: the fused op (3 rows: one-shot over sentinel units split over
// clusters of four at 7168 wide or in a WIDE CTA at 4096, two-shot over LL;
// 160 x 4096, 1.25 MiB: two-shot over sentinel units, and at 2 ranks the
// one-shot over the two-shot's pipeline) on rank 0 alone, each on a fresh
// communicator. Every row must come back NaN in out and residual_out, and
// the error must name the op.
TEST(ZZ_Timeout, MissingPeerPoisonsEveryFusedRow) {
  ARNORM_SKIP_WITHOUT_PEERS();
  const size_t shapes[][2] = {{3, 7168}, {3, 4096}, {160, 4096}};
  for (const auto& shape : shapes) {
    for (arnormAlgorithm_t algo : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
      const size_t tokens = shape[0], hidden = shape[1], n = tokens * hidden;
      arnormComm_t c = nullptr;
      ASSERT_NO_FATAL_FAILURE(create_private_comm(&c));
      DeviceBuffer in(n * 2), res(n * 2), out(n * 2), w(hidden * 2);
      cudaMemset(in.ptr, 0, n * 2);
      cudaMemset(res.ptr, 0, n * 2);
      cudaMemset(w.ptr, 0, hidden * 2);
      cudaDeviceSynchronize();
      if (rank() == 0) {
        arnormAddRmsNormArgs_t a = fused_args(in.ptr, res.ptr, res.ptr, w.ptr, out.ptr, tokens, hidden);
        a.algo = algo;
        const auto t0 = std::chrono::steady_clock::now();
        EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduceAddRmsNorm(c, &a, env().stream));
        EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
        // Later steps' waits allow up to three timeouts (the header's bound).
        EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 3.0 + 1.0)
            << "the wait was not bounded: " << arnormAlgorithmName(algo) << " hidden " << hidden;
        EXPECT_EQ(ARNORM_ERROR_PEER_TIMEOUT, arnormCommGetAsyncError(c)) << arnormAlgorithmName(algo) << " hidden " << hidden;
        const std::string msg = arnormGetLastErrorString();
        EXPECT_NE(std::string::npos, msg.find("arnormAllReduceAddRmsNorm")) << msg;
        EXPECT_NE(std::string::npos, msg.find("waiting for rank ")) << "the missing rank is named: " << msg;
        if (world() == 2 && tokens * hidden * 2 > (size_t{1} << 20) && algo == ARNORM_ALGO_ONESHOT) {
          EXPECT_NE(std::string::npos, msg.find("(one-shot over the pipeline)"))
              << "at 2 ranks a one-shot above 1 MiB takes the pipeline, and its error says so: " << msg;
        }
        for (const DeviceBuffer* b : {&out, &res}) {
          EXPECT_EQ(n, nan_count(*b, n))
              << arnormAlgorithmName(algo) << " hidden " << hidden << (b == &out ? ": out" : ": residual_out");
        }
      }
      cudaDeviceSynchronize();
      barrier();
      arnormCommDestroy(c);
    }
  }
}

// Last too: the plain two-shot, over LL (8 KiB) and over sentinel units
// (2 MiB), on rank 0 alone. Its reduce-scatter wait gives up within the
// timeout and names a rank; its all-gather publishes nothing and gives up at
// once; the whole output is NaN.
TEST(ZZ_Timeout, MissingPeerInTwoShotIsReported) {
  ARNORM_SKIP_WITHOUT_PEERS();
  for (const size_t n : {size_t{4096}, size_t{1} << 20}) {
    arnormComm_t c = nullptr;
    ASSERT_NO_FATAL_FAILURE(create_private_comm(&c));
    DeviceBuffer in(n * 2), out(n * 2);
    cudaMemset(in.ptr, 0, n * 2);
    cudaDeviceSynchronize();
    if (rank() == 0) {
      const auto t0 = std::chrono::steady_clock::now();
      EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_TWOSHOT, env().stream));
      expect_timed_out(c, "two-shot", t0, out, n);
    }
    cudaDeviceSynchronize();
    barrier();
    arnormCommDestroy(c);
  }
}

// Last too: data a late peer writes after this rank gave up must not pass as
// a later call's. Rank 0 queues call A, then (behind a held stream) calls B
// and C, both after A and so both started aborted. A times out; only then do
// the other ranks make A, which completes (rank 0 had pushed) and writes
// their A data into rank 0's region of A's parity, which is C's too. Rank 0's
// C must come out NaN: sentinel units carry no epoch, so that data looks
// complete to it. The one-shot over sentinel units, plain (128 KiB) and fused
// (3 x 7168).
TEST(ZZ_Timeout, LatePeerDataDoesNotPassInLaterCalls) {
  ARNORM_SKIP_WITHOUT_PEERS();
  // (StreamHold loads its kernel now: a first launch at hold() could wait for
  // call A in flight, which would time out before B and C are queued.)
  StreamHold held;
  ASSERT_TRUE(held.ok());
  for (const bool fused : {false, true}) {
    SCOPED_TRACE(fused ? "fused one-shot, 3 x 7168" : "plain one-shot, 65536 elements");
    const size_t tokens = 3, hidden = 7168, n = fused ? tokens * hidden : size_t{1} << 16;
    arnormComm_t c = nullptr;
    ASSERT_NO_FATAL_FAILURE(create_private_comm(&c));
    DeviceBuffer in(n * 2), res(n * 2), w(hidden * 2), out_a(n * 2), out_b(n * 2), out_c(n * 2);
    for (const DeviceBuffer* b : {&in, &res, &w, &out_a, &out_b, &out_c}) cudaMemset(b->ptr, 0, b->bytes);
    cudaDeviceSynchronize();
    auto call = [&](const DeviceBuffer& out) {
      if (!fused) return arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_ONESHOT, env().stream);
      arnormAddRmsNormArgs_t a = fused_args(in.ptr, res.ptr, nullptr, w.ptr, out.ptr, tokens, hidden);
      a.algo = ARNORM_ALGO_ONESHOT;
      return arnormAllReduceAddRmsNorm(c, &a, env().stream);
    };
    if (rank() == 0) {
      EXPECT_EQ(ARNORM_SUCCESS, call(out_a)) << arnormGetLastErrorString();
      held.hold(env().stream);
      EXPECT_EQ(ARNORM_SUCCESS, call(out_b)) << arnormGetLastErrorString();
      EXPECT_EQ(ARNORM_SUCCESS, call(out_c)) << arnormGetLastErrorString();
      const auto t0 = std::chrono::steady_clock::now();
      while (arnormCommGetAsyncError(c) == ARNORM_SUCCESS &&
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 10.0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      EXPECT_EQ(ARNORM_ERROR_PEER_TIMEOUT, arnormCommGetAsyncError(c)) << "call A did not time out";
    }
    barrier();
    if (rank() != 0) {
      EXPECT_EQ(ARNORM_SUCCESS, call(out_a)) << arnormGetLastErrorString();
      EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
      EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetAsyncError(c)) << "rank 0 had pushed call A";
    }
    barrier();
    if (rank() == 0) {
      held.release();
      EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
      EXPECT_EQ(n, nan_count(out_a, n)) << "call A timed out";
      EXPECT_EQ(n, nan_count(out_b, n)) << "call B started aborted";
      EXPECT_EQ(n, nan_count(out_c, n)) << "call C summed a late peer's data of call A";
    }
    cudaDeviceSynchronize();
    barrier();
    arnormCommDestroy(c);
  }
}

// Last too: an NCCL-served call (ARNORM_ALGO=nccl: arnorm's own NCCL comm)
// that rank 0 makes alone, after one call every rank made (so NCCL is
// connected and its kernel, not its set-up, is what waits). The watchdog
// must give up within the bound, say that NCCL served it, and abort the
// comm, which ends the kernel: the stream drains. Every later call fails at
// once. The other ranks then make the same call; whatever NCCL does with a
// peer that aborted, their wait must be bounded too.
TEST(ZZ_Timeout, MissingPeerInNcclServedCallIsReported) {
  ARNORM_SKIP_WITHOUT_PEERS();
  ARNORM_SKIP_WITHOUT_NCCL();
  const ScopedEnv force("ARNORM_ALGO", "nccl");
  arnormComm_t c = nullptr;
  ASSERT_NO_FATAL_FAILURE(create_private_comm(&c, nullptr));
  const size_t n = 8192;
  DeviceBuffer in(n * 2), out(n * 2);
  cudaMemset(in.ptr, 0, n * 2);
  cudaDeviceSynchronize();
  ARNORM_OK(arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, env().stream));
  EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(env().stream));
  barrier();
  const auto t0 = std::chrono::steady_clock::now();
  auto waited = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  if (rank() == 0) {
    const arnormStatus_t st = arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, env().stream);
    EXPECT_TRUE(st == ARNORM_SUCCESS || st == ARNORM_ERROR_PEER_TIMEOUT) << arnormGetLastErrorString();
    cudaStreamSynchronize(env().stream);  // an aborted NCCL kernel may leave an error here
    cudaGetLastError();
    while (arnormCommGetAsyncError(c) == ARNORM_SUCCESS && waited() < 10.0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_LT(waited(), 5.0) << "the NCCL-served call's wait was not bounded";
    EXPECT_EQ(ARNORM_ERROR_PEER_TIMEOUT, arnormCommGetAsyncError(c));
    const std::string msg = arnormGetLastErrorString();
    EXPECT_NE(std::string::npos, msg.find("served by NCCL")) << msg;
    EXPECT_NE(std::string::npos, msg.find("arnormAllReduce")) << msg;
    EXPECT_EQ(ARNORM_ERROR_PEER_TIMEOUT,
              arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, env().stream));
  }
  barrier();
  if (rank() != 0) {
    const auto t1 = std::chrono::steady_clock::now();
    const arnormStatus_t st = arnormAllReduce(c, in.ptr, out.ptr, n, ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, env().stream);
    cudaStreamSynchronize(env().stream);
    cudaGetLastError();
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), 5.0)
        << "a call after a peer aborted waited without bound (status " << st << ")";
  }
  cudaDeviceSynchronize();
  cudaGetLastError();
  barrier();
  arnormCommDestroy(c);
}

}  // namespace
}  // namespace arnorm_test
