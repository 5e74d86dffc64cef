// Ranks of one communicator as threads of one process, the way a
// single-process server drives its GPUs: they use each other's workspace
// addresses (a process cannot open its own IPC handles). Rank 0's process
// runs these with threads of its own; the other ranks only wait at the
// closing barrier, so no peer kernel of theirs waits on rank 0 meanwhile.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fused_reference.h"
#include "harness.h"

namespace arnorm_test {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Creates a world-N communicator from N threads, thread r on devices[r];
// returns each rank's status and last error message, and runs use(r, comm)
// on each success. The threads bootstrap through HostCollectives over a
// shared memory of their own, as the launcher's rank processes do.
// workspace_bytes: the communicators' budget (0: the default).
template <typename Use>
void thread_ranks(const std::vector<int>& devices, std::vector<arnormStatus_t>* status,
                  std::vector<std::string>* message, Use use, size_t workspace_bytes = 0) {
  const int world = static_cast<int>(devices.size());
  status->assign(world, ARNORM_SUCCESS);
  message->assign(world, "");
  const int fd = memfd_create("arnorm-in-process-test", 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(0, ftruncate(fd, static_cast<off_t>(arnorm_tools::host_collectives_bytes(world))));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      arnorm_tools::RankContext ctx{};
      ctx.rank = r;
      ctx.world_size = world;
      ctx.shm_fd = fd;
      arnorm_tools::HostCollectives group(ctx);
      cudaSetDevice(devices[r]);
      arnormConfig_t cfg = ARNORM_CONFIG_INIT;
      cfg.nccl_fallback = 0;  // a silent NCCL fallback would pass the data checks
      cfg.workspace_bytes = workspace_bytes;
      arnormComm_t c = nullptr;
      (*status)[r] = arnormCommCreate(&c, r, world, devices[r], {&arnorm_tools::host_allgather_callback, &group}, &cfg);
      (*message)[r] = arnormGetLastErrorString();
      if ((*status)[r] == ARNORM_SUCCESS) {
        use(r, c, group);
        group.barrier();  // every rank's work is complete before any frees its workspace
        EXPECT_EQ(ARNORM_SUCCESS, arnormCommDestroy(c)) << arnormGetLastErrorString();
      }
    });
  }
  for (auto& t : threads) t.join();
  close(fd);
}

// Two ranks on one GPU are refused unless ARNORM_ALLOW_SHARED_GPU says this
// is a test, with nothing left behind.
TEST(CommInProcess, RanksOnOneGpuAreRefused) {
  if (rank() == 0) {
    const int dev = env().ctx.device;
    std::vector<arnormStatus_t> st;
    std::vector<std::string> msg;
    // (set by the launcher when ranks share GPUs: --share-gpus)
    const ScopedEnv deny("ARNORM_ALLOW_SHARED_GPU", "0");
    thread_ranks({dev, dev}, &st, &msg, [](int, arnormComm_t, arnorm_tools::HostCollectives&) {});
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, st[r]) << msg[r];
      EXPECT_NE(std::string::npos, msg[r].find("use the same GPU")) << msg[r];
    }
  }
  barrier();
}

// SHARED GPU with the ranks as threads of one process: their kernels run at
// the same instant (unlike --share-gpus, where processes take turns), so the
// protocols meet real concurrency between ranks on one GPU. Fresh inputs on
// every round; the plain all-reduce is checked bitwise against the
// definition, the fused op bitwise across ranks and against the other
// algorithm.
TEST(CommInProcess, ConcurrentRanksOnOneGpu) {
  // Every rank advances the inputs' counter alike (rank 0 alone uses it).
  const uint64_t base0 = env().iteration;
  env().iteration += 10000;
  // A sanitizer runs kernels one at a time: ranks at the same instant cannot.
  if (std::getenv("ARNORM_LAUNCH_WRAPPED") != nullptr) GTEST_SKIP() << "not under a wrapper (compute-sanitizer)";
  if (rank() == 0) {
    const ScopedEnv allow("ARNORM_ALLOW_SHARED_GPU", "1");
    const int dev = env().ctx.device;
    const size_t sizes[] = {1000, 65537, 262147, size_t{1} << 20};
    const std::pair<size_t, size_t> shapes[] = {{1, 7168}, {16, 7168}, {4, 8192}, {16, 8192}, {5, 4096}, {2, 5120},
                                                {130, 4096}, {3, 16384}, {64, 8192}};
    const size_t max_n = std::max<size_t>(size_t{1} << 20, 130 * 4096);
    const arnormAlgorithm_t algos[] = {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT};
    // The origin of the call times a failure prints (one GPU, so the
    // ranks' events compare).
    cudaEvent_t origin_gpu = nullptr;
    cudaEventCreate(&origin_gpu);
    cudaEventRecord(origin_gpu, nullptr);
    cudaEventSynchronize(origin_gpu);
    const auto origin_host = std::chrono::steady_clock::now();
    // The default workspace at every world size from 2 to 8 (3, 5, 6 and 7
    // leave slots of the rank capacity empty), then the small one of the
    // suite's chunking tests (512 KiB) at 2, 4 and 8, where calls take many
    // chunks and the fused two-shot reuses its row slots: the buffer reuse
    // that ranks at the same instant could race on.
    const int worlds[] = {2, 4, 8, 3, 5, 6, 7, 2, 4, 8};
    constexpr int kSmallFrom = 7;
    for (int pass = 0; pass < 10; ++pass) {
      const size_t budget = pass < kSmallFrom ? 0 : size_t{512} << 10;
      const int world = worlds[pass];
      // (a pass's iterations stay within 1000 of its base)
      const uint64_t base = base0 + 1000 * static_cast<uint64_t>(pass);
      std::vector<arnormStatus_t> st;
      std::vector<std::string> msg;
      // Every rank's times for each plain call, printed for the calls any
      // rank failed: a late rank shows whether it was late on the host, in
      // its stream, or inside its kernel (one failure in 23 repeats in
      // session 17 left only the failing ranks' times).
      struct CallTimes {
        double host_at = -1, host_done = -1, gpu_from = -1, gpu_to = -1;
      };
      constexpr size_t kPlainCalls = 3 * 4 * 2;  // rounds x sizes x algorithms
      std::vector<std::vector<CallTimes>> times(kPlainCalls, std::vector<CallTimes>(world));
      std::vector<bool> call_failed(kPlainCalls, false);
      std::mutex failed_mu;
      thread_ranks(
          std::vector<int>(world, dev), &st, &msg,
          [&](int r, arnormComm_t c, arnorm_tools::HostCollectives& group) {
            // Everything on the rank's own stream, and no allocation or free
            // between calls: cudaFree waits for the whole GPU, where a peer's
            // kernel may be waiting for this rank's next call.
            cudaStream_t s = nullptr;
            cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
            cudaEvent_t ev_before = nullptr, ev_after = nullptr;
            cudaEventCreate(&ev_before);
            cudaEventCreate(&ev_after);
            DeviceBuffer d_in(max_n * 2), d_out(max_n * 2), d_res(max_n * 2), d_w(16384 * 2), d_h(max_n * 2);
            // Copies go through pinned memory only: a copy to or from pageable
            // memory may wait for other streams' kernels (seen: for the peers'
            // kernels, which wait for this rank's next call, until they time
            // out), while a pinned copy waits for its own stream alone.
            void* pinned = nullptr;
            cudaMallocHost(&pinned, max_n * 2);
            auto to_device = [&](const DeviceBuffer& d, const std::vector<__nv_bfloat16>& v) {
              std::memcpy(pinned, v.data(), v.size() * 2);
              cudaMemcpyAsync(d.ptr, pinned, v.size() * 2, cudaMemcpyHostToDevice, s);
              cudaStreamSynchronize(s);  // the staging buffer is free again
            };
            auto to_host = [&](const DeviceBuffer& d, size_t n) {
              std::vector<__nv_bfloat16> v(n);
              cudaMemcpyAsync(pinned, d.ptr, n * 2, cudaMemcpyDeviceToHost, s);
              cudaStreamSynchronize(s);
              std::memcpy(v.data(), pinned, n * 2);
              return v;
            };
            // Every step a call's staging takes, once on the new stream before
            // the barrier: twice (sessions 17 and 19) a rank's first call of a
            // pass was made on the host only when the peers' first kernels had
            // timed out (5 s after theirs), held before its call by one of
            // these first uses while their kernels waited for it.
            to_device(d_in, std::vector<__nv_bfloat16>(16));
            cudaMemsetAsync(d_out.ptr, 0xFF, 32, s);
            cudaEventRecord(ev_before, s);
            (void)to_host(d_out, 16);
            group.barrier();  // every rank's buffers exist before any rank calls
            size_t call = 0;  // this rank's plain calls so far in the pass
            for (int round = 0; round < 3; ++round) {
              for (size_t n : sizes) {
                const uint64_t iter = base + round * 100 + n % 97;
                const auto in = make_input<__nv_bfloat16>(r, iter, n);
                const auto ref = reference_sum<__nv_bfloat16>(iter, n, world);
                to_device(d_in, in);
                for (arnormAlgorithm_t algo : algos) {
                  cudaMemsetAsync(d_out.ptr, 0xFF, n * 2, s);
                  // When each rank's call was made (host) and when its stream
                  // reached and left the kernel (GPU), against one origin: a
                  // failure says whether a late rank was late on the host, in
                  // its stream, or inside its kernel.
                  cudaEventRecord(ev_before, s);
                  const double host_at = seconds_since(origin_host);
                  const arnormStatus_t called = arnormAllReduce(c, d_in.ptr, d_out.ptr, n, ARNORM_BFLOAT16, algo, s);
                  EXPECT_EQ(ARNORM_SUCCESS, called) << arnormGetLastErrorString();
                  const double host_done = seconds_since(origin_host);
                  cudaEventRecord(ev_after, s);
                  const auto got = to_host(d_out, n);
                  float gpu_before = -1, gpu_after = -1;
                  cudaEventElapsedTime(&gpu_before, origin_gpu, ev_before);
                  cudaEventElapsedTime(&gpu_after, origin_gpu, ev_after);
                  const size_t mismatches = count_bit_mismatches(got, ref);
                  if (call < kPlainCalls) {
                    times[call][r] = CallTimes{host_at, host_done, gpu_before / 1e3, gpu_after / 1e3};
                    if (called != ARNORM_SUCCESS || mismatches != 0) {
                      const std::lock_guard<std::mutex> lock(failed_mu);
                      call_failed[call] = true;
                    }
                  }
                  ++call;
                  EXPECT_EQ(0u, mismatches)
                      << "world " << world << " rank " << r << " " << arnormAlgorithmName(algo) << " n=" << n
                      << " workspace " << budget << ": call made at " << host_at << " s, returned at " << host_done
                      << " s (host); kernel from " << gpu_before / 1e3 << " s to " << gpu_after / 1e3 << " s (GPU)";
                }
              }
              for (const auto& shape : shapes) {
                const size_t tokens = shape.first, hidden = shape.second, n = tokens * hidden;
                const uint64_t iter = base + round * 100 + 50 + hidden % 31 + tokens;
                to_device(d_in, make_input<__nv_bfloat16>(r, iter, n));
                to_device(d_res, make_input<__nv_bfloat16>(world, iter, n));  // the same on every rank
                to_device(d_w, make_input<__nv_bfloat16>(world + 1, iter, hidden));
                uint64_t hashes[2] = {};
                std::vector<__nv_bfloat16> h0, y0;  // the one-shot's outputs
                for (int a = 0; a < 2; ++a) {
                  cudaMemsetAsync(d_h.ptr, 0xFF, n * 2, s);
                  cudaMemsetAsync(d_out.ptr, 0xFF, n * 2, s);
                  arnormAddRmsNormArgs_t args =
                      fused_args(d_in.ptr, d_res.ptr, d_h.ptr, d_w.ptr, d_out.ptr, tokens, hidden);
                  // (With the small workspace a one-shot row may not fit: auto
                  // then takes the two-shot, as a caller's call would.)
                  args.algo = budget && algos[a] == ARNORM_ALGO_ONESHOT ? ARNORM_ALGO_AUTO : algos[a];
                  EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduceAddRmsNorm(c, &args, s)) << arnormGetLastErrorString();
                  const auto h = to_host(d_h, n), y = to_host(d_out, n);
                  hashes[a] = hash_bytes(h.data(), n * 2) ^ (hash_bytes(y.data(), n * 2) * 3);
                  if (a == 0) h0 = h, y0 = y;
                }
                // The definition, on rank 0 in the first round (the ranks'
                // outputs are compared with each other below): every world
                // size, 3, 5, 6 and 7 included, with the ranks at the same instant.
                if (r == 0 && round == 0) {
                  std::vector<std::vector<__nv_bfloat16>> xs;
                  for (int q = 0; q < world; ++q) xs.push_back(make_input<__nv_bfloat16>(q, iter, n));
                  std::vector<__nv_bfloat16> h_ref;
                  std::vector<double> y_ref;
                  fused_reference<__nv_bfloat16, __nv_bfloat16>(xs, make_input<__nv_bfloat16>(world, iter, n),
                                                                make_input<__nv_bfloat16>(world + 1, iter, hidden),
                                                                tokens, hidden, 1e-6f, &h_ref, &y_ref);
                  EXPECT_EQ(0u, count_bit_mismatches(h0, h_ref))
                      << "residual_out differs from the definition: world " << world << ", " << tokens << " x "
                      << hidden << " workspace " << budget;
                  EXPECT_EQ(0u, count_outside_bound(y0, y_ref))
                      << "out outside the definition's bound: world " << world << ", " << tokens << " x " << hidden
                      << " workspace " << budget;
                }
                EXPECT_EQ(hashes[0], hashes[1]) << "one-shot and two-shot differ: world " << world << " rank " << r
                                                << " " << tokens << " x " << hidden << " workspace " << budget;
                std::vector<uint64_t> all(world);
                group.allgather(&hashes[0], all.data(), sizeof(uint64_t));
                for (int q = 0; q < world; ++q)
                  EXPECT_EQ(all[0], all[q])
                      << "ranks 0 and " << q << " differ: world " << world << ", " << tokens << " x " << hidden;
              }
            }
            EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(s));
            group.barrier();  // no rank frees its buffers while a peer may still read them
            cudaEventDestroy(ev_before);
            cudaEventDestroy(ev_after);
            cudaFreeHost(pinned);
            cudaStreamDestroy(s);
          },
          budget);
      for (int r = 0; r < world; ++r)
        EXPECT_EQ(ARNORM_SUCCESS, st[r]) << "world " << world << ", workspace " << budget << ": " << msg[r];
      int shown = 0;
      for (size_t k = 0; k < kPlainCalls && shown < 3; ++k) {
        if (!call_failed[k]) continue;
        ++shown;
        std::printf("world %d, workspace %zu, plain call %zu of the pass failed on some rank; every rank's times "
                    "(s; -1: not reached):\n",
                    world, budget, k);
        for (int r = 0; r < world; ++r) {
          const CallTimes& t = times[k][r];
          std::printf("  rank %d: call made %.6f, returned %.6f (host); kernel %.6f to %.6f (GPU)\n", r, t.host_at,
                      t.host_done, t.gpu_from, t.gpu_to);
        }
      }
    }
    cudaEventDestroy(origin_gpu);
  }
  barrier();
}

// On two GPUs: peer access without NCCL, and both algorithms give the
// definition's bits on both ranks.
TEST(CommInProcess, RanksOnTwoGpusReduceExactly) {
  int gpus = 0;
  cudaGetDeviceCount(&gpus);
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs visible to one process";
  const uint64_t iter = ++env().iteration;  // on every rank: the counters stay in step
  if (rank() == 0) {
    const std::vector<int> devices = {env().ctx.device, (env().ctx.device + 1) % gpus};
    std::vector<arnormStatus_t> st;
    std::vector<std::string> msg;
    thread_ranks(devices, &st, &msg, [&](int r, arnormComm_t c, arnorm_tools::HostCollectives&) {
      arnormCommInfo_t info{};
      EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetInfo(c, &info));
      EXPECT_EQ(1, info.peer_access);
      cudaStream_t s = nullptr;
      cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
      for (size_t n : {size_t{1000}, size_t{262147}, size_t{3} << 20}) {
        const auto in = make_input<__nv_bfloat16>(r, iter + n, n);
        const auto ref = reference_sum<__nv_bfloat16>(iter + n, n, 2);
        DeviceBuffer d_in(n * 2), d_out(n * 2);
        // Input and poison on the call's stream: ordered before it (a legacy-stream
        // memset or a copy from pageable memory need not be).
        cudaMemcpyAsync(d_in.ptr, in.data(), n * 2, cudaMemcpyHostToDevice, s);
        for (arnormAlgorithm_t algo : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
          cudaMemsetAsync(d_out.ptr, 0xFF, n * 2, s);
          EXPECT_EQ(ARNORM_SUCCESS, arnormAllReduce(c, d_in.ptr, d_out.ptr, n, ARNORM_BFLOAT16, algo, s))
              << arnormGetLastErrorString();
          EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(s));
          std::vector<__nv_bfloat16> got(n);
          cudaMemcpy(got.data(), d_out.ptr, n * 2, cudaMemcpyDeviceToHost);
          EXPECT_EQ(0u, count_bit_mismatches(got, ref)) << "rank " << r << " " << arnormAlgorithmName(algo) << " n=" << n;
        }
      }
      cudaStreamDestroy(s);
    });
    for (int r = 0; r < 2; ++r) EXPECT_EQ(ARNORM_SUCCESS, st[r]) << msg[r];
  }
  barrier();
}

}  // namespace
}  // namespace arnorm_test
