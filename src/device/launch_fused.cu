#include "core/status.h"
#include "device/fused_kernels.cuh"
#include "device/launch.h"

namespace arnorm {
namespace {

template <typename T, typename W, bool kVec>
void (*fused_kernel(arnormAlgorithm_t algo))(FusedParams) {
  switch (algo) {
    case ARNORM_ALGO_ONESHOT: return fused_oneshot_kernel<T, W, kVec>;
    case ARNORM_ALGO_TWOSHOT: return fused_twoshot_kernel<T, W, kVec>;
    case ARNORM_ALGO_NCCL: return add_rmsnorm_kernel<T, W, kVec>;
    default: return nullptr;
  }
}

template <typename T, typename W>
void (*pick_vec(const AddRmsNormLaunch& l))(FusedParams) {
  return l.vectorized ? fused_kernel<T, W, true>(l.algo) : fused_kernel<T, W, false>(l.algo);
}

template <typename T>
void (*pick_weight(const AddRmsNormLaunch& l))(FusedParams) {
  switch (l.weight_dtype) {
    case ARNORM_FLOAT32: return pick_vec<T, float>(l);
    case ARNORM_FLOAT16: return pick_vec<T, __half>(l);
    case ARNORM_BFLOAT16: return pick_vec<T, __nv_bfloat16>(l);
  }
  return nullptr;
}

}  // namespace

arnormStatus_t launch_add_rmsnorm(const AddRmsNormLaunch& l, cudaStream_t stream) {
  void (*kernel)(FusedParams) = nullptr;
  switch (l.dtype) {
    case ARNORM_FLOAT32: kernel = pick_weight<float>(l); break;
    case ARNORM_FLOAT16: kernel = pick_weight<__half>(l); break;
    case ARNORM_BFLOAT16: kernel = pick_weight<__nv_bfloat16>(l); break;
  }
  if (kernel == nullptr) {
    return ARNORM_FAIL(ARNORM_ERROR_INTERNAL, "launch_add_rmsnorm: no kernel for algo %d dtype %d weight %d", l.algo,
                       l.dtype, l.weight_dtype);
  }
  const int limit = l.algo == ARNORM_ALGO_NCCL ? 65535 : l.params.sync.layout.max_blocks;
  if (l.blocks < 1 || l.blocks > limit) {
    return ARNORM_FAIL(ARNORM_ERROR_INTERNAL, "launch_add_rmsnorm: %d blocks outside [1, %d]", l.blocks, limit);
  }
  // Peer-memory kernels run the full grid (see EPOCH in sync.cuh); the norm
  // after NCCL has no epoch and runs one CTA per row.
  FusedParams params = l.params;
  params.sync.active_blocks = l.blocks;
  if (l.algo != ARNORM_ALGO_NCCL) return launch_peer_kernel(kernel, l.params.sync.layout.max_blocks, params, l.pdl, stream);
  kernel<<<l.blocks, kThreadsPerBlock, 0, stream>>>(params);
  ARNORM_CUDA_TRY(cudaGetLastError());
  return ARNORM_SUCCESS;
}

}  // namespace arnorm
