// Argument checking against a fake MemoryInspector: every rejection names
// the problem; valid calls pass.
#include <gtest/gtest.h>

#include <limits>
#include <map>

#include "core/status.h"
#include "core/validate.h"

namespace arnorm {
namespace {

// Pretends a few address ranges are device allocations on given devices.
class FakeMemory : public MemoryInspector {
 public:
  // mapped: a piece mapped into a reserved range (cuMemMap) rather than a
  // cudaMalloc allocation.
  void add(uintptr_t base, size_t size, int device, bool mapped = false) { allocs_[base] = {size, device, mapped}; }
  BufferFacts inspect(const void* p) const override {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    for (const auto& [base, info] : allocs_) {
      if (a >= base && a < base + info.size) {
        BufferFacts f;
        f.is_device = true;
        f.device = info.device;
        f.has_range = true;
        f.base = base;
        f.size = info.size;
        return f;
      }
    }
    return BufferFacts{};
  }
  bool is_mapped_piece(const void* p) const override {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    for (const auto& [base, info] : allocs_)
      if (a >= base && a < base + info.size) return info.mapped;
    return false;
  }
  bool stream_device(cudaStream_t s, int* device) const override {
    if (s == reinterpret_cast<cudaStream_t>(0xdead)) return false;
    *device = s == reinterpret_cast<cudaStream_t>(0x5001) ? 1 : 0;
    return true;
  }

 private:
  struct Alloc {
    size_t size;
    int device;
    bool mapped;
  };
  std::map<uintptr_t, Alloc> allocs_;
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

// A buffer may run from one mapped piece into the next (PyTorch's expandable
// segments map their memory piece by piece), never past a gap, onto another
// device's piece, or from one cudaMalloc allocation into the next.
TEST_F(Validate, BuffersMayCrossMappedPiecesOnly) {
  constexpr uintptr_t kV = 0x50000000, kPiece = 2 << 20;
  mem.add(kV, kPiece, 0, true);
  mem.add(kV + kPiece, kPiece, 0, true);
  mem.add(kV + 2 * kPiece, kPiece, 0, true);
  const size_t three = 3 * kPiece / 2;  // bf16 elements of three pieces (in place: one buffer)
  EXPECT_EQ(ARNORM_SUCCESS, validate_allreduce(call(kV + 1024, kV + 1024, three / 2), 0, mem)) << last_error();
  EXPECT_EQ(ARNORM_SUCCESS, validate_allreduce(call(kV, kV, three), 0, mem)) << last_error();
  expect_error(call(kV, kV, three + 1), "bytes left");
  // A gap after the second piece, then a piece of another device.
  constexpr uintptr_t kW = 0x60000000;
  mem.add(kW, kPiece, 0, true);
  mem.add(kW + kPiece, kPiece, 0, true);
  mem.add(kW + 3 * kPiece, kPiece, 0, true);
  mem.add(kW + 2 * kPiece + kPiece / 2, kPiece / 2, 0, true);  // starts inside the gap: not adjacent
  expect_error(call(kW, kW, three), "bytes left");
  constexpr uintptr_t kX = 0x70000000;
  mem.add(kX, kPiece, 0, true);
  mem.add(kX + kPiece, kPiece, 1, true);
  expect_error(call(kX, kX, kPiece), "bytes left");
  // Two cudaMalloc allocations side by side stay two.
  constexpr uintptr_t kY = 0x80000000;
  mem.add(kY, kPiece, 0);
  mem.add(kY + kPiece, kPiece, 0);
  expect_error(call(kY, kY, kPiece / 2 + 1), "bytes left");
  EXPECT_NE(std::string::npos, last_error().find("has 2097152 bytes left")) << last_error();
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

// The fused op's arguments: kA holds input, residual and out side by side
// (each 1000 x 8 bf16 = 16,000 bytes), kB the weight.
class ValidateFused : public Validate {
 protected:
  arnormAddRmsNormArgs_t args() {
    arnormAddRmsNormArgs_t a = ARNORM_ADD_RMSNORM_ARGS_INIT;
    a.input = reinterpret_cast<const void*>(kA);
    a.residual = reinterpret_cast<const void*>(kA + kRows);
    a.residual_out = reinterpret_cast<void*>(kA + kRows);
    a.out = reinterpret_cast<void*>(kA + 2 * kRows);
    a.weight = reinterpret_cast<const void*>(kB);
    a.tokens = 1000;
    a.hidden = 8;
    a.epsilon = 1e-6f;
    a.dtype = ARNORM_BFLOAT16;
    a.weight_dtype = ARNORM_BFLOAT16;
    return a;
  }
  void expect_error(const arnormAddRmsNormArgs_t& a, const char* fragment) {
    EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, validate_add_rmsnorm(&a, nullptr, 0, mem));
    EXPECT_NE(std::string::npos, last_error().find(fragment)) << last_error();
  }
  static constexpr uintptr_t kRows = 16000;
};

TEST_F(ValidateFused, AcceptsGoodCalls) {
  arnormAddRmsNormArgs_t a = args();
  EXPECT_EQ(ARNORM_SUCCESS, validate_add_rmsnorm(&a, nullptr, 0, mem)) << "residual updated in place";
  a.residual_out = reinterpret_cast<void*>(kA + 3 * kRows);
  EXPECT_EQ(ARNORM_SUCCESS, validate_add_rmsnorm(&a, nullptr, 0, mem)) << "residual_out apart";
  a.residual = nullptr;
  a.residual_out = nullptr;
  EXPECT_EQ(ARNORM_SUCCESS, validate_add_rmsnorm(&a, nullptr, 0, mem)) << "no residual";
  a = args();
  a.weight_dtype = ARNORM_FLOAT32;  // 32 bytes of weight: kB has them
  EXPECT_EQ(ARNORM_SUCCESS, validate_add_rmsnorm(&a, nullptr, 0, mem)) << "fp32 weight";
  a.epsilon = 0.f;
  EXPECT_EQ(ARNORM_SUCCESS, validate_add_rmsnorm(&a, nullptr, 0, mem)) << "epsilon 0";
  a = args();
  a.tokens = 0;
  a.input = a.residual = a.weight = nullptr;
  a.out = a.residual_out = nullptr;
  a.hidden = 4096;
  EXPECT_EQ(ARNORM_SUCCESS, validate_add_rmsnorm(&a, nullptr, 0, mem)) << "0 tokens: a no-op, buffers unread";
}

// The initialiser guesses neither type nor epsilon (vllm#48324: an fp32
// gamma read as bf16): each unset field is named, even in a call of 0 tokens.
TEST_F(ValidateFused, InitLeavesTypesAndEpsilonToTheCaller) {
  arnormAddRmsNormArgs_t a = ARNORM_ADD_RMSNORM_ARGS_INIT;
  const arnormAddRmsNormArgs_t good = args();
  a.input = good.input;
  a.residual = good.residual;
  a.residual_out = good.residual_out;
  a.out = good.out;
  a.weight = good.weight;
  a.tokens = good.tokens;
  a.hidden = good.hidden;
  expect_error(a, "dtype and weight_dtype are not set");
  a.dtype = ARNORM_BFLOAT16;
  expect_error(a, "weight_dtype is not set");
  a.weight_dtype = ARNORM_FLOAT32;
  expect_error(a, "epsilon is not set");
  a.epsilon = 1e-5f;
  EXPECT_EQ(ARNORM_SUCCESS, validate_add_rmsnorm(&a, nullptr, 0, mem)) << last_error();
  a = ARNORM_ADD_RMSNORM_ARGS_INIT;
  a.hidden = 4096;
  a.weight_dtype = ARNORM_BFLOAT16;
  expect_error(a, "dtype is not set");
}

TEST_F(ValidateFused, RejectsBadArguments) {
  EXPECT_EQ(ARNORM_ERROR_INVALID_ARGUMENT, validate_add_rmsnorm(nullptr, nullptr, 0, mem));
  arnormAddRmsNormArgs_t a = args();
  a.struct_size = 8;
  expect_error(a, "struct_size");
  a = args();
  a.weight_dtype = static_cast<arnormDataType_t>(9);
  expect_error(a, "weight_dtype 9");
  a = args();
  a.algo = static_cast<arnormAlgorithm_t>(17);
  expect_error(a, "algorithm 17");
  a = args();
  a.hidden = 0;
  expect_error(a, "hidden is 0");
  for (float eps : {-1e-6f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    a = args();
    a.epsilon = eps;
    expect_error(a, "epsilon");
  }
  a = args();
  a.tokens = size_t{1} << 62;
  expect_error(a, "overflows");
  a = args();
  a.out = nullptr;
  expect_error(a, "out is NULL");
}

TEST_F(ValidateFused, SizesBuffersByTheirOwnTypes) {
  arnormAddRmsNormArgs_t a = args();
  // An fp32 weight of 8 needs 32 bytes: 16 left before the end fail.
  a.weight = reinterpret_cast<const void*>(kB + (1 << 20) - 16);
  EXPECT_EQ(ARNORM_SUCCESS, validate_add_rmsnorm(&a, nullptr, 0, mem)) << "bf16 weight: 16 bytes fit";
  a.weight_dtype = ARNORM_FLOAT32;
  expect_error(a, ": weight (");
  EXPECT_NE(std::string::npos, last_error().find("has 16 bytes left")) << last_error();
  // fp32 activations need twice the rows' bytes.
  a = args();
  a.dtype = ARNORM_FLOAT32;
  a.out = reinterpret_cast<void*>(kA + (1 << 20) - 2 * kRows + 4);
  a.residual_out = reinterpret_cast<void*>(kA + 4 * kRows);
  expect_error(a, ": out (");
  EXPECT_NE(std::string::npos, last_error().find("needs 32000")) << last_error();
}

TEST_F(ValidateFused, RejectsAliasingTheOpCannotHonour) {
  arnormAddRmsNormArgs_t a = args();
  a.out = const_cast<void*>(a.input);
  expect_error(a, "out overlaps input");
  a = args();
  a.out = reinterpret_cast<void*>(kA + kRows + 2);  // inside residual
  expect_error(a, "out overlaps residual");
  a = args();
  a.weight = reinterpret_cast<const void*>(kA + 2 * kRows + 8);  // inside out
  expect_error(a, "out overlaps weight");
  a = args();
  a.residual_out = a.out;
  expect_error(a, "out overlaps residual_out");
  a = args();
  a.residual_out = reinterpret_cast<void*>(kA + 2);  // over input
  expect_error(a, "residual_out overlaps input");
  a = args();
  a.out = reinterpret_cast<void*>(kA + 3 * kRows);
  a.residual_out = reinterpret_cast<void*>(kA + kRows + 2);  // part of residual
  expect_error(a, "without being equal");
}

TEST(Overlap, Ranges) {
  char buf[64];
  EXPECT_TRUE(ranges_overlap(buf, 10, buf + 9, 10));
  EXPECT_FALSE(ranges_overlap(buf, 10, buf + 10, 10));
  EXPECT_FALSE(ranges_overlap(buf, 0, buf, 10));
}

}  // namespace
}  // namespace arnorm
