#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "check.h"
#include "launcher.h"

namespace arnorm_tools {
namespace {

// The shared memory: this header, then one slot per rank. Every collective
// is "write my slot, barrier, read every slot, barrier": the second barrier
// is what lets the next collective overwrite the slots.
struct SharedHeader {
  std::atomic<uint32_t> arrived;     // ranks in the current barrier
  std::atomic<uint32_t> generation;  // completed barriers
};
constexpr size_t kHeaderBytes = 64;
constexpr size_t kSlotBytes = size_t{1} << 20;
static_assert(sizeof(SharedHeader) <= kHeaderBytes, "header fits its line");
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
  if (h->arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<uint32_t>(world_)) {
    h->arrived.store(0, std::memory_order_relaxed);
    h->generation.fetch_add(1, std::memory_order_release);
    return 0;
  }
  for (unsigned spins = 0; h->generation.load(std::memory_order_acquire) == gen; ++spins) {
    if (spins < 1000) sched_yield();
    else usleep(50);
  }
  return 0;
}

int HostCollectives::allgather(const void* send, void* recv, size_t bytes) {
  uint8_t* slots = static_cast<uint8_t*>(shared_) + kHeaderBytes;
  for (size_t off = 0; off < bytes; off += kSlotBytes) {
    const size_t n = std::min(kSlotBytes, bytes - off);
    memcpy(slots + static_cast<size_t>(rank_) * kSlotBytes, static_cast<const uint8_t*>(send) + off, n);
    barrier();
    for (int r = 0; r < world_; ++r)
      memcpy(static_cast<uint8_t*>(recv) + static_cast<size_t>(r) * bytes + off, slots + static_cast<size_t>(r) * kSlotBytes, n);
    barrier();
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
