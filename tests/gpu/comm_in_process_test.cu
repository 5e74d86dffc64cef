// Ranks of one communicator as threads of one process (one GPU each), the
// way a single-process server drives its GPUs: they use each other's
// workspace addresses (a process cannot open its own IPC handles). Rank 0's
// process runs these with threads of its own; the other ranks only wait at
// the closing barrier, so no peer kernel of theirs waits on rank 0 meanwhile.
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "harness.h"

namespace arnorm_test {
namespace {

// Creates a world-2 communicator from two threads on `devices`; returns each
// rank's status and last error message, and runs `use` on each success. The
// threads bootstrap through HostCollectives over a shared memory of their
// own, as the launcher's rank processes do.
template <typename Use>
void two_threads(const int (&devices)[2], arnormStatus_t (&status)[2], std::string (&message)[2], Use use) {
  const int fd = memfd_create("arnorm-in-process-test", 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(0, ftruncate(fd, static_cast<off_t>(arnorm_tools::host_collectives_bytes(2))));
  std::thread threads[2];
  for (int r = 0; r < 2; ++r) {
    threads[r] = std::thread([&, r] {
      arnorm_tools::RankContext ctx{};
      ctx.rank = r;
      ctx.world_size = 2;
      ctx.shm_fd = fd;
      arnorm_tools::HostCollectives group(ctx);
      cudaSetDevice(devices[r]);
      arnormConfig_t cfg = ARNORM_CONFIG_INIT;
      cfg.nccl_fallback = 0;  // a silent NCCL fallback would pass the data checks
      arnormComm_t c = nullptr;
      status[r] = arnormCommCreate(&c, r, 2, devices[r], {&arnorm_tools::host_allgather_callback, &group}, &cfg);
      message[r] = arnormGetLastErrorString();
      if (status[r] == ARNORM_SUCCESS) {
        use(r, c);
        group.barrier();  // both ranks' work is complete before either frees its workspace
        EXPECT_EQ(ARNORM_SUCCESS, arnormCommDestroy(c)) << arnormGetLastErrorString();
      }
    });
  }
  for (auto& t : threads) t.join();
  close(fd);
}

// Two ranks in one process on one GPU are refused with a reason, whether or
// not ARNORM_ALLOW_SHARED_GPU is set (in one process their kernels would run
// at once and could starve each other); nothing is left behind.
TEST(CommInProcess, RanksOnOneGpuAreRefused) {
  if (rank() == 0) {
    const int dev = env().ctx.device;
    arnormStatus_t st[2];
    std::string msg[2];
    {
      // (set by the launcher when ranks share GPUs: --share-gpus)
      const ScopedEnv deny("ARNORM_ALLOW_SHARED_GPU", "0");
      two_threads({dev, dev}, st, msg, [](int, arnormComm_t) {});
    }
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, st[r]) << msg[r];
      EXPECT_NE(std::string::npos, msg[r].find("use the same GPU")) << msg[r];
    }
    const ScopedEnv allow("ARNORM_ALLOW_SHARED_GPU", "1");
    two_threads({dev, dev}, st, msg, [](int, arnormComm_t) {});
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, st[r]) << msg[r];
      EXPECT_NE(std::string::npos, msg[r].find("within one process")) << msg[r];
    }
  }
  barrier();
}

// On two GPUs: peer access without NCCL, and both algorithms give the
// definition's bits on both ranks.
TEST(CommInProcess, RanksOnTwoGpusReduceExactly) {
  int gpus = 0;
  cudaGetDeviceCount(&gpus);
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs visible to one process";
  if (rank() == 0) {
    const int devices[2] = {env().ctx.device, (env().ctx.device + 1) % gpus};
    arnormStatus_t st[2];
    std::string msg[2];
    const uint64_t iter = ++env().iteration;
    two_threads(devices, st, msg, [&](int r, arnormComm_t c) {
      arnormCommInfo_t info{};
      EXPECT_EQ(ARNORM_SUCCESS, arnormCommGetInfo(c, &info));
      EXPECT_EQ(1, info.peer_access);
      cudaStream_t s = nullptr;
      cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
      for (size_t n : {size_t{1000}, size_t{262147}, size_t{3} << 20}) {
        const auto in = make_input<__nv_bfloat16>(r, iter + n, n);
        const auto ref = reference_sum<__nv_bfloat16>(iter + n, n, 2);
        DeviceBuffer d_in(n * 2), d_out(n * 2);
        cudaMemcpy(d_in.ptr, in.data(), n * 2, cudaMemcpyHostToDevice);
        for (arnormAlgorithm_t algo : {ARNORM_ALGO_ONESHOT, ARNORM_ALGO_TWOSHOT}) {
          cudaMemset(d_out.ptr, 0xFF, n * 2);
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
