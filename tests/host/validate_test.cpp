// Argument checking against a fake MemoryInspector: every rejection names
// the problem; valid calls pass.
#include <gtest/gtest.h>

#include <map>

#include "core/status.h"
#include "core/validate.h"

namespace arnorm {
namespace {

// Pretends a few address ranges are device allocations on given devices.
class FakeMemory : public MemoryInspector {
 public:
  void add(uintptr_t base, size_t size, int device) { allocs_[base] = {size, device}; }
  BufferFacts inspect(const void* p) const override {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    for (const auto& [base, info] : allocs_) {
      if (a >= base && a < base + info.first) {
        BufferFacts f;
        f.is_device = true;
        f.device = info.second;
        f.has_range = true;
        f.base = base;
        f.size = info.first;
        return f;
      }
    }
    return BufferFacts{};
  }
  bool stream_device(cudaStream_t s, int* device) const override {
    if (s == reinterpret_cast<cudaStream_t>(0xdead)) return false;
    *device = s == reinterpret_cast<cudaStream_t>(0x5001) ? 1 : 0;
    return true;
  }

 private:
  std::map<uintptr_t, std::pair<size_t, int>> allocs_;
};

class Validate : public ::testing::Test {
 protected:
  void SetUp() override {
    mem.add(kA, 1 << 20, 0);
    mem.add(kB, 1 << 20, 0);
    mem.add(kOther, 1 << 20, 1);
  }
  AllReduceCall call(uintptr_t in, uintptr_t out, size_t count) {
    return AllReduceCall{reinterpret_cast<const void*>(in), reinterpret_cast<void*>(out), count,
                         ARNORM_BFLOAT16, ARNORM_ALGO_AUTO, nullptr};
  }
  void expect_error(const AllReduceCall& c, const char* fragment) {
    EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, validate_allreduce(c, 0, mem));
    EXPECT_NE(std::string::npos, last_error().find(fragment)) << last_error();
  }
  static constexpr uintptr_t kA = 0x10000000, kB = 0x20000000, kOther = 0x30000000;
  FakeMemory mem;
};

TEST_F(Validate, AcceptsGoodCalls) {
  EXPECT_EQ(ARNORM_SUCCESS, validate_allreduce(call(kA, kB, 1000), 0, mem)) << last_error();
  EXPECT_EQ(ARNORM_SUCCESS, validate_allreduce(call(kA, kA, 1000), 0, mem)) << "in place";
  EXPECT_EQ(ARNORM_SUCCESS, validate_allreduce(call(kA + 2, kB + 6, 7), 0, mem)) << "element-aligned";
  EXPECT_EQ(ARNORM_SUCCESS, validate_allreduce(call(0, 0, 0), 0, mem)) << "empty call";
  EXPECT_EQ(ARNORM_SUCCESS, validate_allreduce(call(kA, kB, (1 << 20) / 2), 0, mem)) << "whole allocation";
}

TEST_F(Validate, RejectsBadPointers) {
  expect_error(call(0, kB, 10), "sendbuf is NULL");
  expect_error(call(kA, 0, 10), "recvbuf is NULL");
  expect_error(call(0x40000000, kB, 10), "not device memory");
  expect_error(call(kOther, kB, 10), "lives on device 1");
  expect_error(call(kA + 1, kB, 10), "not aligned");
  expect_error(call(kA, kB, (1 << 20) / 2 + 1), "bytes left");
  expect_error(call(kA + (1 << 20) - 4, kB, 4), "bytes left");
  expect_error(call(kA, kA + 2, 10), "overlap");
}

TEST_F(Validate, RejectsBadTypesCountsAndStreams) {
  AllReduceCall c = call(kA, kB, 10);
  c.dtype = static_cast<arnormDataType_t>(7);
  expect_error(c, "dtype 7");
  c = call(kA, kB, 10);
  c.algo = static_cast<arnormAlgorithm_t>(-1);
  expect_error(c, "algorithm -1");
  c = call(kA, kB, ~size_t{0} / 2 + 1);
  expect_error(c, "overflows");
  c = call(kA, kB, 10);
  c.stream = reinterpret_cast<cudaStream_t>(0x5001);
  expect_error(c, "stream belongs to device 1");
  c.stream = reinterpret_cast<cudaStream_t>(0xdead);
  expect_error(c, "not a valid CUDA stream");
}

TEST(Overlap, Ranges) {
  char buf[64];
  EXPECT_TRUE(ranges_overlap(buf, 10, buf + 9, 10));
  EXPECT_FALSE(ranges_overlap(buf, 10, buf + 10, 10));
  EXPECT_FALSE(ranges_overlap(buf, 0, buf, 10));
}

}  // namespace
}  // namespace arnorm
