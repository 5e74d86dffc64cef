// Shared state and helpers of the multi-GPU tests. One process per GPU runs
// the same GoogleTest sequence; every collective step happens on every rank
// in the same order, and checks use EXPECT (never an early return) so the
// ranks stay in lockstep even when a check fails.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "arnorm/arnorm.h"
#include "arnorm/arnorm.hpp"
#include "arnorm/arnorm_nccl.h"
#include "common/launcher.h"

namespace arnorm_test {

#define CUDA_OK(expr) ASSERT_EQ(cudaSuccess, (expr)) << #expr << ": " << cudaGetErrorString(cudaGetLastError())
#define ARNORM_OK(expr) \
  ASSERT_EQ(ARNORM_SUCCESS, (expr)) << #expr << ": " << arnormGetLastErrorString()

struct Env {
  arnorm_tools::RankContext ctx{};
  ncclComm_t nccl = nullptr;
  cudaStream_t stream = nullptr;
  arnorm_tools::HostCollectives* host = nullptr;
  arnormComm_t comm = nullptr;        // default workspace
  arnormComm_t small_comm = nullptr;  // tiny workspace: forces many chunks
  uint64_t iteration = 0;             // advanced by every fresh input
};

Env& env();

inline int rank() { return env().ctx.rank; }
inline int world() { return env().ctx.world_size; }

// A test that needs another rank (a missing peer, a rank that fails, another
// GPU) skips, saying so, when the suite runs at world size 1 (`--world 1`:
// every kernel on one GPU, nothing crossing NVLink).
#define ARNORM_SKIP_WITHOUT_PEERS()                                                  \
  do {                                                                               \
    if (::arnorm_test::world() < 2) GTEST_SKIP() << "needs 2 or more ranks (world 1)"; \
  } while (0)

// A test that compares with NCCL skips when ranks share a GPU (`--share-gpus`:
// NCCL takes one GPU per rank).
#define ARNORM_SKIP_WITHOUT_NCCL()                                                                     \
  do {                                                                                                 \
    if (::arnorm_test::env().nccl == nullptr) GTEST_SKIP() << "needs NCCL (ranks share a GPU: no NCCL)"; \
  } while (0)

// Host-side element conversions with the same rounding as the device.
template <typename T>
float to_float(T x);
template <>
inline float to_float<float>(float x) { return x; }
template <>
inline float to_float<__half>(__half x) { return __half2float(x); }
template <>
inline float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
T from_float(float x);
template <>
inline float from_float<float>(float x) { return x; }
template <>
inline __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T>
arnormDataType_t dtype_of();
template <>
inline arnormDataType_t dtype_of<float>() { return ARNORM_FLOAT32; }
template <>
inline arnormDataType_t dtype_of<__half>() { return ARNORM_FLOAT16; }
template <>
inline arnormDataType_t dtype_of<__nv_bfloat16>() { return ARNORM_BFLOAT16; }

// Random values of rank `r` for input set `iter`: any rank can regenerate
// any other rank's input, so the reference needs no communication.
// `integers` draws small integers whose sums are exact in every order.
template <typename T>
std::vector<T> make_input(int r, uint64_t iter, size_t n, bool integers = false) {
  std::mt19937_64 gen(0x5eed0000ull ^ (iter * 1000003ull) ^ (static_cast<uint64_t>(r) << 48));
  std::uniform_real_distribution<float> real(-2.f, 2.f);
  std::uniform_int_distribution<int> whole(-4, 4);
  std::vector<T> v(n);
  for (auto& x : v) x = from_float<T>(integers ? static_cast<float>(whole(gen)) : real(gen));
  return v;
}

// The definition: fp32 sum from rank 0's value, ranks in order, one rounding.
template <typename T>
std::vector<T> reference_sum(uint64_t iter, size_t n, int world_size, bool integers = false) {
  std::vector<float> acc(n);
  for (int r = 0; r < world_size; ++r) {
    const std::vector<T> x = make_input<T>(r, iter, n, integers);
    for (size_t i = 0; i < n; ++i) acc[i] = r == 0 ? to_float(x[i]) : acc[i] + to_float(x[i]);
  }
  std::vector<T> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = from_float<T>(acc[i]);
  return out;
}

// Number of elements whose bits differ.
template <typename T>
size_t count_bit_mismatches(const std::vector<T>& a, const std::vector<T>& b) {
  size_t bad = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) bad += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return bad + (a.size() > b.size() ? a.size() - b.size() : b.size() - a.size());
}

// A device allocation of the current device, freed at scope exit.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) { cudaMalloc(&ptr, n ? n : 1); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as(size_t elem_offset = 0) const { return static_cast<T*>(ptr) + elem_offset; }
};

uint64_t hash_bytes(const void* data, size_t bytes);

// True on every rank iff every rank passed the same 64-bit value.
bool same_on_all_ranks(uint64_t value);

// Sum over ranks of a local count.
uint64_t sum_over_ranks(uint64_t value);

void barrier();

// Holds a stream at a point of its queue until release(): a kernel spinning
// on a flag in mapped host memory (stream_hold.cu). The kernel is loaded at
// construction, so hold() never waits for kernels in flight.
class StreamHold {
 public:
  StreamHold();
  ~StreamHold();
  StreamHold(const StreamHold&) = delete;
  StreamHold& operator=(const StreamHold&) = delete;
  bool ok() const { return flag_ != nullptr && loaded_; }
  void hold(cudaStream_t stream);  // the stream's later work waits from here
  void release();

 private:
  volatile int* flag_ = nullptr;
  int* device_flag_ = nullptr;
  bool loaded_ = false;
};

// Sets an environment variable for its lifetime, then puts back what was
// there (a value set from outside, or none).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

constexpr unsigned char kPoisonByte = 0xFF;  // NaN in every float type

// Arguments of a fused call with bf16 activations and weight, epsilon 1e-6
// and AUTO on the given buffers; residual and residual_out may be nullptr.
// (The C++ wrapper's helper, so the tests use what a user would.)
inline arnormAddRmsNormArgs_t fused_args(const void* input, const void* residual, void* residual_out,
                                         const void* weight, void* out, size_t tokens, size_t hidden) {
  return arnorm::add_rmsnorm_args(input, residual, residual_out, weight, out, tokens, hidden, ARNORM_BFLOAT16,
                                  ARNORM_BFLOAT16, 1e-6f);
}

}  // namespace arnorm_test
