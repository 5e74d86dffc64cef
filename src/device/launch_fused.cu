#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

#include "core/status.h"
#include "device/fused_kernels.cuh"
#include "device/launch.h"

namespace arnorm {
namespace {

template <typename T, typename W, bool kVec>
void (*fused_kernel(arnormAlgorithm_t algo, bool split))(FusedParams) {
  switch (algo) {
    case ARNORM_ALGO_ONESHOT: return split ? fused_oneshot_split_kernel<T, W, kVec> : fused_oneshot_kernel<T, W, kVec>;
    case ARNORM_ALGO_TWOSHOT: return split ? fused_twoshot_ll_kernel<T, W, kVec> : fused_twoshot_kernel<T, W, kVec>;
    case ARNORM_ALGO_NCCL: return add_rmsnorm_kernel<T, W, kVec>;
    default: return nullptr;
  }
}

template <typename T, typename W>
void (*pick_vec(const AddRmsNormLaunch& l))(FusedParams) {
  // Split epilogue: one-shot rows that fit a cluster, and two-shot over LL.
  const bool split = l.params.cluster > 0;
  return l.vectorized ? fused_kernel<T, W, true>(l.algo, split) : fused_kernel<T, W, false>(l.algo, split);
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

// Clusters of `cluster` CTAs of `kernel` that can be resident at once on the
// current device (cached per device, kernel and size: a property of the GPU
// and the binary).
int max_active_clusters(void (*kernel)(FusedParams), int cluster, int grid) {
  static std::mutex mu;
  static std::map<std::tuple<int, void*, int>, int> cache;
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(device, reinterpret_cast<void*>(kernel), cluster);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  cudaLaunchAttribute attr[1] = {};
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim = {static_cast<unsigned>(cluster), 1, 1};
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(kThreadsPerBlock);
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
  }
  cache[key] = n;
  return n;
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
  const int grid = l.params.sync.layout.max_blocks;
  if (l.algo != ARNORM_ALGO_NCCL && l.params.cluster > 0) {
    // Every active CTA must be resident at once (a resident CTA may wait for
    // a unit another active CTA of this rank pushes). The split kernels pair
    // no CTAs across ranks, so this local limit may differ between ranks.
    const int c = l.params.cluster;
    const int resident = max_active_clusters(kernel, c, grid) * c;
    if (resident < c) {
      return ARNORM_FAIL(ARNORM_ERROR_CUDA, "launch_add_rmsnorm: no cluster of %d CTAs fits this GPU", c);
    }
    params.sync.active_blocks = std::min(params.sync.active_blocks, resident);
    return launch_peer_kernel(kernel, grid, params, l.pdl, stream, c);
  }
  if (l.algo == ARNORM_ALGO_TWOSHOT) {
    return launch_peer_kernel(kernel, grid, params, l.pdl, stream, 0, kFusedTwoShotThreads);
  }
  if (l.algo != ARNORM_ALGO_NCCL) return launch_peer_kernel(kernel, grid, params, l.pdl, stream);
  kernel<<<l.blocks, kThreadsPerBlock, 0, stream>>>(params);
  ARNORM_CUDA_TRY(cudaGetLastError());
  return ARNORM_SUCCESS;
}

}  // namespace arnorm
