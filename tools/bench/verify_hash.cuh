// Device helpers shared by the verification kernels (verify.cu,
// fused_verify.cu): the hash that draws every test value, and per-type
// conversions. Values are small integers (or multiples of 1/64), exact in
// fp32, fp16 and bf16, so results can be compared bit for bit.
#ifndef ARNORM_TOOLS_BENCH_VERIFY_HASH_CUH
#define ARNORM_TOOLS_BENCH_VERIFY_HASH_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stddef.h>
#include <stdint.h>

namespace arnorm_bench {
namespace verify_detail {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;

inline unsigned blocks_for(size_t items) {
  const size_t blocks = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

__host__ __device__ inline uint64_t mix64(uint64_t x) {  // splitmix64 finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Key of rank `rank`'s values for `seed`. Keys past the last rank serve the
// values every rank shares (the residual, the weight).
__host__ __device__ inline uint64_t rank_key(uint64_t seed, int rank) {
  return mix64(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(rank) + 1);
}

// An integer in [-4, 4].
__device__ inline int value_at(uint64_t key, size_t i) {
  return static_cast<int>(mix64(key ^ static_cast<uint64_t>(i)) % 9) - 4;
}

template <typename T>
struct Elem;
template <>
struct Elem<float> {
  using Bits = uint32_t;
  __device__ static float from_float(float v) { return v; }
  __device__ static float to_float(float v) { return v; }
};
template <>
struct Elem<__half> {
  using Bits = uint16_t;
  __device__ static __half from_float(float v) { return __float2half_rn(v); }
  __device__ static float to_float(__half v) { return __half2float(v); }
};
template <>
struct Elem<__nv_bfloat16> {
  using Bits = uint16_t;
  __device__ static __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
  __device__ static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
};

// Exact for the small integers the checks use.
template <typename T>
__device__ T from_int(int v) {
  return Elem<T>::from_float(static_cast<float>(v));
}

template <typename T>
__device__ typename Elem<T>::Bits bits_of(T v) {
  typename Elem<T>::Bits b;
  memcpy(&b, &v, sizeof(b));
  return b;
}

// Sum of `value` over the block's threads, added once per warp to *counter.
// Every lane of every warp must call it.
__device__ inline void add_to_counter(unsigned long long value, unsigned long long* counter) {
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_down_sync(0xffffffffu, value, offset);
  if ((threadIdx.x & 31) == 0 && value != 0) atomicAdd(counter, value);
}

}  // namespace verify_detail
}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_VERIFY_HASH_CUH
