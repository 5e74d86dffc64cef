// HostCollectives (tools/common) over the launcher's shared memory, with
// threads standing in for the rank processes: each thread maps the same
// memfd through its own HostCollectives, as a rank does.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "common/launcher.h"

namespace {

// Runs body(rank, collectives) on `world` threads over one shared mapping.
template <typename Body>
void run_ranks(int world, Body body) {
  const int fd = memfd_create("arnorm-host-collectives-test", 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(0, ftruncate(fd, static_cast<off_t>(arnorm_tools::host_collectives_bytes(world))));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([=] {
      arnorm_tools::RankContext ctx{};
      ctx.rank = r;
      ctx.world_size = world;
      ctx.shm_fd = fd;
      arnorm_tools::HostCollectives host(ctx);
      ASSERT_TRUE(host.ok());
      body(r, host);
    });
  }
  for (auto& t : threads) t.join();
  close(fd);
}

uint8_t byte_of(int rank, size_t i, int round) { return static_cast<uint8_t>(rank * 37 + i * 11 + round * 5); }

// Messages larger than a rank's slot (1 MiB) go through in pieces; rounds
// follow each other at once, with ranks of different speed, so a slot is
// overwritten only after every rank has read it.
TEST(HostCollectives, AllGatherOfAnySizeInRankOrder) {
  const int world = 4;
  for (size_t bytes : {size_t{1}, size_t{4096}, (size_t{1} << 20) + 3, size_t{3} << 20}) {
    run_ranks(world, [&](int rank, arnorm_tools::HostCollectives& host) {
      for (int round = 0; round < 3; ++round) {
        if (rank == round % world) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        std::vector<uint8_t> mine(bytes), all(world * bytes, 0);
        for (size_t i = 0; i < bytes; ++i) mine[i] = byte_of(rank, i, round);
        ASSERT_EQ(0, host.allgather(mine.data(), all.data(), bytes));
        size_t wrong = 0;
        for (int r = 0; r < world; ++r)
          for (size_t i = 0; i < bytes; ++i) wrong += all[r * bytes + i] != byte_of(r, i, round);
        EXPECT_EQ(0u, wrong) << "rank " << rank << " round " << round << " bytes " << bytes;
      }
    });
  }
}

TEST(HostCollectives, SumMaxAndBarrier) {
  const int world = 3;
  std::atomic<int> entered{0};
  run_ranks(world, [&](int rank, arnorm_tools::HostCollectives& host) {
    double s = rank + 0.5, m = rank == 1 ? 7.0 : -1.0;
    ASSERT_EQ(0, host.sum(&s));
    ASSERT_EQ(0, host.max(&m));
    EXPECT_EQ(0.5 + 1.5 + 2.5, s);
    EXPECT_EQ(7.0, m);
    // Nobody leaves the barrier before everyone has entered it.
    if (rank == 2) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    entered.fetch_add(1);
    ASSERT_EQ(0, host.barrier());
    EXPECT_EQ(world, entered.load());
  });
}

}  // namespace

// With a timeout, a barrier that a rank never reaches fails on the others
// and names the rank (an ASSERT that ended a test early on one rank once
// left the rest waiting until the launcher's step timeout).
TEST(HostCollectives, BarrierTimeoutNamesTheRankBehind) {
  std::atomic<int> failed{0};
  testing::internal::CaptureStderr();
  run_ranks(3, [&](int rank, arnorm_tools::HostCollectives& host) {
    host.set_timeout(0.3);
    ASSERT_EQ(0, host.barrier());  // every rank: barrier 1
    if (rank == 2) return;         // skips barrier 2
    const auto start = std::chrono::steady_clock::now();
    failed += host.barrier() != 0;
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  });
  const std::string said = testing::internal::GetCapturedStderr();
  EXPECT_EQ(2, failed.load());
  EXPECT_NE(std::string::npos, said.find("host barrier 2: waited 0.3 s; not arrived: 2 (at barrier 1)")) << said;
}
