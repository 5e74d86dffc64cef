#include <math.h>

#include "common/check.h"
#include "fused_verify.h"
#include "verify_hash.cuh"

namespace arnorm_bench {
namespace {

using namespace verify_detail;

// rank_key() slots past the last rank: values every rank shares.
constexpr int kResidualKey = ARNORM_MAX_RANKS + 1;
constexpr int kWeightKey = ARNORM_MAX_RANKS + 2;

__device__ float weight_value(uint64_t key, size_t j) {
  return 0.5f + static_cast<float>(mix64(key ^ static_cast<uint64_t>(j)) % 65) / 64.0f;
}

// Calls fn(T{}) with T the element type of `dtype`.
template <typename Fn>
int dispatch(arnormDataType_t dtype, const char* what, Fn&& fn) {
  switch (dtype) {
    case ARNORM_FLOAT32:
      return fn(float{});
    case ARNORM_FLOAT16:
      return fn(__half{});
    case ARNORM_BFLOAT16:
      return fn(__nv_bfloat16{});
    case ARNORM_DTYPE_UNSET:
      break;
  }
  TOOLS_ERROR("%s: unknown data type %d", what, static_cast<int>(dtype));
  return 1;
}

// Calls fn(B{}) with B the unsigned integer as wide as an element.
template <typename Fn>
int dispatch_bits(arnormDataType_t dtype, Fn&& fn) {
  return dtype == ARNORM_FLOAT32 ? fn(uint32_t{}) : fn(uint16_t{});
}

template <typename T>
__global__ void residual_kernel(T* out, size_t count, uint64_t key) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count;
       i += size_t(gridDim.x) * blockDim.x)
    out[i] = from_int<T>(value_at(key, i));
}

template <typename W>
__global__ void weight_kernel(W* out, size_t hidden, uint64_t key) {
  for (size_t j = blockIdx.x * size_t(blockDim.x) + threadIdx.x; j < hidden;
       j += size_t(gridDim.x) * blockDim.x)
    out[j] = Elem<W>::from_float(weight_value(key, j));
}

template <typename T>
__global__ void zero_sum_kernel(T* out, size_t count, uint64_t seed, int rank, int world) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count;
       i += size_t(gridDim.x) * blockDim.x) {
    int v = 0;
    if (rank < world - 1) {
      v = value_at(rank_key(seed, rank), i);
    } else {
      for (int r = 0; r < world - 1; ++r) v -= value_at(rank_key(seed, r), i);
    }
    out[i] = from_int<T>(v);
  }
}

__device__ unsigned guard_errors(const void* out, const void* residual_out, size_t bytes) {
  const unsigned char* g[2] = {static_cast<const unsigned char*>(out) + bytes,
                               static_cast<const unsigned char*>(residual_out) + bytes};
  unsigned bad = 0;
  for (size_t j = blockIdx.x * size_t(blockDim.x) + threadIdx.x; j < kGuardBytes;
       j += size_t(gridDim.x) * blockDim.x)
    bad += (g[0][j] != 0xFF) + (g[1][j] != 0xFF);
  return bad;
}

// Sum over the block; every thread gets it. The block must be kThreads wide.
__device__ unsigned long long block_sum(unsigned long long v) {
  __shared__ unsigned long long warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  __syncthreads();  // the previous call's readers are done
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  unsigned long long total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  return total;
}

// One block per row (grid-stride over rows).
template <typename T, typename W>
__global__ void reference_kernel(FusedCheck c, double tolerance, unsigned long long* counter) {
  uint64_t keys[ARNORM_MAX_RANKS];
  for (int r = 0; r < c.world_size; ++r) keys[r] = rank_key(c.seed, r);
  const uint64_t residual_key = rank_key(c.seed, kResidualKey);
  const uint64_t weight_key = rank_key(c.seed, kWeightKey);
  auto h_at = [&](size_t i) {
    int h = value_at(residual_key, i);
    for (int r = 0; r < c.world_size; ++r) h += value_at(keys[r], i);
    return h;
  };
  const T* out = static_cast<const T*>(c.out);
  const T* res = static_cast<const T*>(c.residual_out);
  const W* weight = static_cast<const W*>(c.weight);
  unsigned long long bad = 0;
  for (size_t row = blockIdx.x; row < c.tokens; row += gridDim.x) {
    const size_t base = row * c.hidden;
    unsigned long long squares = 0;
    for (size_t j = threadIdx.x; j < c.hidden; j += blockDim.x) {
      const int h = h_at(base + j);
      squares += static_cast<unsigned long long>(h * h);
    }
    const double inv_rms =
        1.0 / sqrt(static_cast<double>(block_sum(squares)) / static_cast<double>(c.hidden) +
                   static_cast<double>(c.epsilon));
    for (size_t j = threadIdx.x; j < c.hidden; j += blockDim.x) {
      const int h = h_at(base + j);
      bad += bits_of(res[base + j]) != bits_of(from_int<T>(h));
      bad += bits_of(weight[j]) != bits_of(Elem<W>::from_float(weight_value(weight_key, j)));
      const double expect = h * inv_rms * static_cast<double>(weight_value(weight_key, j));
      const double got = static_cast<double>(Elem<T>::to_float(out[base + j]));
      bad += !(fabs(got - expect) <= tolerance * fabs(expect));  // NaN fails
    }
  }
  bad += guard_errors(c.out, c.residual_out, c.tokens * c.hidden * sizeof(T));
  add_to_counter(bad, counter);
}

template <typename B>
__global__ void diff_kernel(const B* out, const B* ref_out, const B* res, const B* ref_res,
                            size_t count, unsigned long long* counter) {
  unsigned long long bad = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count;
       i += size_t(gridDim.x) * blockDim.x)
    bad += (out[i] != ref_out[i]) + (res[i] != ref_res[i]);
  bad += guard_errors(out, res, count * sizeof(B));
  add_to_counter(bad, counter);
}

template <typename B>
__global__ void hash_kernel(const B* buf, size_t count, unsigned long long* counter) {
  unsigned long long h = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count;
       i += size_t(gridDim.x) * blockDim.x)
    h += mix64(mix64(static_cast<uint64_t>(i)) ^ static_cast<uint64_t>(buf[i]));
  add_to_counter(h, counter);  // a sum: the same whatever the order
}

// Launch error of the kernel just launched (the caller cleared older ones).
int launched() {
  TOOLS_CUDA_TRY(cudaGetLastError());
  return 0;
}

// Zeroes the counter, runs `launch` (which returns non-zero on failure), and
// copies the counter back.
template <typename Fn>
int run_counting(unsigned long long* counter, cudaStream_t stream, uint64_t* result, Fn&& launch) {
  TOOLS_CUDA_TRY(cudaMemsetAsync(counter, 0, sizeof(*counter), stream));
  (void)cudaGetLastError();  // a launch error must be this launch's, not a stale one
  if (launch() != 0) return 1;
  unsigned long long host = 0;
  TOOLS_CUDA_TRY(cudaMemcpyAsync(&host, counter, sizeof(host), cudaMemcpyDeviceToHost, stream));
  TOOLS_CUDA_TRY(cudaStreamSynchronize(stream));
  *result = host;
  return 0;
}

}  // namespace

int fill_shared_residual(void* buf, size_t count, arnormDataType_t dtype, uint64_t seed,
                         cudaStream_t stream) {
  return dispatch(dtype, "fill_shared_residual", [&](auto tag) {
    using T = decltype(tag);
    (void)cudaGetLastError();
    residual_kernel<T><<<blocks_for(count), kThreads, 0, stream>>>(static_cast<T*>(buf), count,
                                                                   rank_key(seed, kResidualKey));
    return launched();
  });
}

int fill_weight(void* buf, size_t hidden, arnormDataType_t dtype, uint64_t seed,
                cudaStream_t stream) {
  return dispatch(dtype, "fill_weight", [&](auto tag) {
    using W = decltype(tag);
    (void)cudaGetLastError();
    weight_kernel<W><<<blocks_for(hidden), kThreads, 0, stream>>>(static_cast<W*>(buf), hidden,
                                                                  rank_key(seed, kWeightKey));
    return launched();
  });
}

int fill_zero_sum(void* buf, size_t count, arnormDataType_t dtype, int rank, int world,
                  uint64_t seed, cudaStream_t stream) {
  if (world < 1 || world > ARNORM_MAX_RANKS) {
    TOOLS_ERROR("fill_zero_sum: world size %d outside [1, %d]", world, ARNORM_MAX_RANKS);
    return 1;
  }
  return dispatch(dtype, "fill_zero_sum", [&](auto tag) {
    using T = decltype(tag);
    (void)cudaGetLastError();
    zero_sum_kernel<T><<<blocks_for(count), kThreads, 0, stream>>>(static_cast<T*>(buf), count,
                                                                   seed, rank, world);
    return launched();
  });
}

int count_fused_reference_errors(const FusedCheck& check, unsigned long long* counter,
                                 cudaStream_t stream, uint64_t* wrong) {
  if (check.world_size < 1 || check.world_size > ARNORM_MAX_RANKS) {
    TOOLS_ERROR("count_fused_reference_errors: world size %d outside [1, %d]", check.world_size,
                ARNORM_MAX_RANKS);
    return 1;
  }
  const double tolerance = check.dtype == ARNORM_FLOAT32 ? 1.0 / 4096 : 1.0 / 128;
  const size_t rows = check.tokens < kMaxBlocks ? check.tokens : kMaxBlocks;
  const unsigned blocks = static_cast<unsigned>(rows < 1 ? 1 : rows);
  return dispatch(check.dtype, "count_fused_reference_errors", [&](auto tag) {
    using T = decltype(tag);
    return dispatch(check.weight_dtype, "count_fused_reference_errors", [&](auto wtag) {
      using W = decltype(wtag);
      return run_counting(counter, stream, wrong, [&] {
        reference_kernel<T, W><<<blocks, kThreads, 0, stream>>>(check, tolerance, counter);
        return launched();
      });
    });
  });
}

int count_fused_differences(const FusedCheck& check, const void* ref_out, const void* ref_residual,
                            unsigned long long* counter, cudaStream_t stream, uint64_t* wrong) {
  const size_t count = check.tokens * check.hidden;
  return dispatch_bits(check.dtype, [&](auto tag) {
    using B = decltype(tag);
    return run_counting(counter, stream, wrong, [&] {
      diff_kernel<B>
          <<<blocks_for(count > kGuardBytes ? count : kGuardBytes), kThreads, 0, stream>>>(
              static_cast<const B*>(check.out), static_cast<const B*>(ref_out),
              static_cast<const B*>(check.residual_out), static_cast<const B*>(ref_residual), count,
              counter);
      return launched();
    });
  });
}

int hash_elements(const void* buf, size_t count, arnormDataType_t dtype,
                  unsigned long long* counter, cudaStream_t stream, uint64_t* hash) {
  return dispatch_bits(dtype, [&](auto tag) {
    using B = decltype(tag);
    return run_counting(counter, stream, hash, [&] {
      hash_kernel<B>
          <<<blocks_for(count), kThreads, 0, stream>>>(static_cast<const B*>(buf), count, counter);
      return launched();
    });
  });
}

}  // namespace arnorm_bench
