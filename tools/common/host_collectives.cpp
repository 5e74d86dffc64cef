#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "check.h"
#include "launcher.h"

namespace arnorm_tools {
namespace {

// The shared memory: this header, then one slot per rank. Every collective
// is "write my slot, barrier, read every slot, barrier": the second barrier
// is what lets the next collective overwrite the slots.
constexpr size_t kHeaderBytes = 4096;
constexpr int kTrackedRanks = 1000;  // ranks whose barrier count a timeout can report
struct SharedHeader {
  std::atomic<uint32_t> arrived;     // ranks in the current barrier
  std::atomic<uint32_t> generation;  // completed barriers
  std::atomic<uint32_t> entered[kTrackedRanks];  // barriers each rank has entered (for a timeout's report)
};
constexpr size_t kSlotBytes = size_t{1} << 20;
static_assert(sizeof(SharedHeader) <= kHeaderBytes, "header fits its space");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "address-free atomics across processes");

}  // namespace

size_t host_collectives_bytes(int world) { return kHeaderBytes + static_cast<size_t>(world) * kSlotBytes; }

HostCollectives::HostCollectives(const RankContext& ctx) : rank_(ctx.rank), world_(ctx.world_size) {
  const size_t bytes = host_collectives_bytes(world_);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, ctx.shm_fd, 0);
  if (p == MAP_FAILED) {
    TOOLS_ERROR("mmap of the launcher's shared memory (fd %d, %zu bytes): %s", ctx.shm_fd, bytes, strerror(errno));
    return;
  }
  shared_ = p;
  shared_bytes_ = bytes;
}

HostCollectives::~HostCollectives() {
  if (shared_ != nullptr) munmap(shared_, shared_bytes_);
}

int HostCollectives::barrier() {
  // Generation barrier: the last rank to arrive resets the count, then opens
  // the barrier by bumping the generation (release), which the waiters read
  // with acquire, so what any rank wrote before arriving is visible to all.
  auto* h = static_cast<SharedHeader*>(shared_);
  const uint32_t gen = h->generation.load(std::memory_order_acquire);
  uint32_t mine = 0;
  if (rank_ < kTrackedRanks) mine = h->entered[rank_].fetch_add(1, std::memory_order_relaxed) + 1;
  if (h->arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<uint32_t>(world_)) {
    h->arrived.store(0, std::memory_order_relaxed);
    h->generation.fetch_add(1, std::memory_order_release);
    return 0;
  }
  const auto start = std::chrono::steady_clock::now();
  for (unsigned spins = 0; h->generation.load(std::memory_order_acquire) == gen; ++spins) {
    if (spins < 1000) {
      sched_yield();
      continue;
    }
    usleep(50);
    if (timeout_seconds_ > 0 && (spins & 1023) == 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_seconds_) {
      std::string missing;
      for (int r = 0; r < world_ && r < kTrackedRanks; ++r) {
        const uint32_t theirs = h->entered[r].load(std::memory_order_relaxed);
        if (theirs < mine) missing += " " + std::to_string(r) + " (at barrier " + std::to_string(theirs) + ")";
      }
      TOOLS_ERROR("host barrier %u: waited %g s; not arrived:%s. The ranks are out of step (a check that ended "
                  "a test early on one rank, or a rank that hangs); the host collectives are unusable now",
                  mine, timeout_seconds_, missing.empty() ? " (unknown)" : missing.c_str());
      return 1;
    }
  }
  return 0;
}

int HostCollectives::allgather(const void* send, void* recv, size_t bytes) {
  uint8_t* slots = static_cast<uint8_t*>(shared_) + kHeaderBytes;
  for (size_t off = 0; off < bytes; off += kSlotBytes) {
    const size_t n = std::min(kSlotBytes, bytes - off);
    memcpy(slots + static_cast<size_t>(rank_) * kSlotBytes, static_cast<const uint8_t*>(send) + off, n);
    if (barrier() != 0) return 1;
    for (int r = 0; r < world_; ++r)
      memcpy(static_cast<uint8_t*>(recv) + static_cast<size_t>(r) * bytes + off, slots + static_cast<size_t>(r) * kSlotBytes, n);
    if (barrier() != 0) return 1;
  }
  return 0;
}

int HostCollectives::max(double* value) {
  std::vector<double> all(static_cast<size_t>(world_));
  if (allgather(value, all.data(), sizeof(double)) != 0) return 1;
  *value = *std::max_element(all.begin(), all.end());
  return 0;
}

int HostCollectives::sum(double* value) {
  std::vector<double> all(static_cast<size_t>(world_));
  if (allgather(value, all.data(), sizeof(double)) != 0) return 1;
  double s = 0.0;
  for (double v : all) s += v;  // rank order: every rank gets the same bits
  *value = s;
  return 0;
}

int host_allgather_callback(const void* send, void* recv, size_t bytes, void* host_collectives) {
  return static_cast<HostCollectives*>(host_collectives)->allgather(send, recv, bytes);
}

}  // namespace arnorm_tools
