#include "common/check.h"
#include "verify.h"
#include "verify_hash.cuh"

namespace arnorm_bench {
namespace {

using namespace verify_detail;

template <typename T>
__global__ void fill_kernel(T* out, size_t count, uint64_t seed, int rank) {
  const uint64_t key = rank_key(seed, rank);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count;
       i += size_t(gridDim.x) * blockDim.x) {
    out[i] = from_int<T>(value_at(key, i));
  }
}

// check_input: whether `in` must still hold the input (false in place).
template <typename T>
__global__ void check_kernel(const T* in, const T* out, bool check_input, bool zero_sum, size_t count,
                             uint64_t seed, int rank, int world, unsigned long long* counter) {
  uint64_t keys[ARNORM_MAX_RANKS];
  for (int r = 0; r < world; ++r) keys[r] = rank_key(seed, r);
  unsigned bad = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  const size_t first = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  for (size_t i = first; i < count; i += stride) {
    int sum = 0;
    for (int r = 0; r < world && !zero_sum; ++r) sum += value_at(keys[r], i);
    bad += bits_of(out[i]) != bits_of(from_int<T>(sum));
    if (check_input) bad += bits_of(in[i]) != bits_of(from_int<T>(value_at(keys[rank], i)));
  }
  const unsigned char* guard = reinterpret_cast<const unsigned char*>(out + count);
  for (size_t j = first; j < kGuardBytes; j += stride) bad += guard[j] != 0xFF;
  // Every lane reaches this (no early exit above), as the full mask requires.
  add_to_counter(bad, counter);
}

template <typename T>
int fill_typed(void* buf, size_t count, int rank, uint64_t seed, cudaStream_t stream) {
  (void)cudaGetLastError();  // a launch error below must be this launch's, not a stale one
  fill_kernel<T>
      <<<blocks_for(count), kThreads, 0, stream>>>(static_cast<T*>(buf), count, seed, rank);
  TOOLS_CUDA_TRY(cudaGetLastError());
  return 0;
}

template <typename T>
int check_typed(const AllReduceCheck& c, unsigned long long* counter, cudaStream_t stream) {
  (void)cudaGetLastError();  // a launch error below must be this launch's, not a stale one
  check_kernel<T>
      <<<blocks_for(c.count > kGuardBytes ? c.count : kGuardBytes), kThreads, 0, stream>>>(
          static_cast<const T*>(c.input), static_cast<const T*>(c.output), c.input != c.output && !c.zero_sum,
          c.zero_sum, c.count, c.seed, c.rank, c.world_size, counter);
  TOOLS_CUDA_TRY(cudaGetLastError());
  return 0;
}

}  // namespace

int fill_verifiable(void* buf, size_t count, arnormDataType_t dtype, int rank, uint64_t seed,
                    cudaStream_t stream) {
  switch (dtype) {
    case ARNORM_FLOAT32:
      return fill_typed<float>(buf, count, rank, seed, stream);
    case ARNORM_FLOAT16:
      return fill_typed<__half>(buf, count, rank, seed, stream);
    case ARNORM_BFLOAT16:
      return fill_typed<__nv_bfloat16>(buf, count, rank, seed, stream);
    case ARNORM_DTYPE_UNSET:
      break;
  }
  TOOLS_ERROR("fill_verifiable: unknown data type %d", static_cast<int>(dtype));
  return 1;
}

int poison(void* buf, size_t bytes, cudaStream_t stream) {
  TOOLS_CUDA_TRY(cudaMemsetAsync(buf, 0xFF, bytes, stream));
  return 0;
}

int count_allreduce_errors(const AllReduceCheck& check, unsigned long long* counter,
                           cudaStream_t stream, uint64_t* wrong) {
  if (check.world_size < 1 || check.world_size > ARNORM_MAX_RANKS) {
    TOOLS_ERROR("count_allreduce_errors: world size %d outside [1, %d]", check.world_size,
                ARNORM_MAX_RANKS);
    return 1;
  }
  TOOLS_CUDA_TRY(cudaMemsetAsync(counter, 0, sizeof(*counter), stream));
  int rc = 1;
  switch (check.dtype) {
    case ARNORM_FLOAT32:
      rc = check_typed<float>(check, counter, stream);
      break;
    case ARNORM_FLOAT16:
      rc = check_typed<__half>(check, counter, stream);
      break;
    case ARNORM_BFLOAT16:
      rc = check_typed<__nv_bfloat16>(check, counter, stream);
      break;
    default:
      TOOLS_ERROR("count_allreduce_errors: unknown data type %d", static_cast<int>(check.dtype));
  }
  if (rc != 0) return rc;
  unsigned long long host = 0;
  TOOLS_CUDA_TRY(cudaMemcpyAsync(&host, counter, sizeof(host), cudaMemcpyDeviceToHost, stream));
  TOOLS_CUDA_TRY(cudaStreamSynchronize(stream));
  *wrong = host;
  return 0;
}

}  // namespace arnorm_bench
