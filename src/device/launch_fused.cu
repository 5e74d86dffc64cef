#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

#include "core/status.h"
#include "device/fused_select.h"
#include "device/launch.h"

namespace arnorm {
namespace {

// An occupancy figure of `kernel` on the current device, cached per device,
// kernel and size (a property of the GPU and the binary): compute(device),
// or -1 with *error set where CUDA cannot say. One cache per kind of figure
// (Compute). A query that failed is not cached: the failure may be the
// moment's, and a cached figure would refuse every later launch.
template <typename Compute>
int cached_occupancy(FusedKernel kernel, int size, cudaError_t* error, Compute compute) {
  static std::mutex mu;
  static std::map<std::tuple<int, void*, int>, int> cache;
  int device = -1;
  if ((*error = cudaGetDevice(&device)) != cudaSuccess) return -1;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(device, reinterpret_cast<void*>(kernel), size);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const int n = compute(device);
  if (n < 0) {
    *error = cudaGetLastError();
    return -1;
  }
  cache[key] = n;
  return n;
}

// Clusters of `cluster` CTAs of `kernel` that can be resident at once.
int max_active_clusters(FusedKernel kernel, int cluster, int grid, cudaError_t* error) {
  return cached_occupancy(kernel, cluster, error, [&](int) {
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim = {static_cast<unsigned>(cluster), 1, 1};
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(kThreadsPerBlock);
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    int n = 0;
    return cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) == cudaSuccess ? n : -1;
  });
}

// CTAs of kWideThreads threads of `kernel` resident at once.
int max_active_wide(FusedKernel kernel, cudaError_t* error) {
  return cached_occupancy(kernel, kWideThreads, error, [&](int device) {
    int per_sm = 0, sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWideThreads, 0) != cudaSuccess) {
      return -1;
    }
    return per_sm * sms;
  });
}

}  // namespace

arnormStatus_t launch_add_rmsnorm(const AddRmsNormLaunch& l, cudaStream_t stream) {
  FusedKernel kernel = nullptr;
  switch (l.dtype) {
    case ARNORM_FLOAT32: kernel = select_fused_kernel_f32(l); break;
    case ARNORM_FLOAT16: kernel = select_fused_kernel_f16(l); break;
    case ARNORM_BFLOAT16: kernel = select_fused_kernel_bf16(l); break;
    case ARNORM_DTYPE_UNSET: break;  // refused by validation before any launch
  }
  if (kernel == nullptr) {
    return ARNORM_FAIL(ARNORM_ERROR_INTERNAL, "launch_add_rmsnorm: no kernel for algo %d dtype %d weight %d", l.algo,
                       l.dtype, l.weight_dtype);
  }
  const int limit = l.algo == ARNORM_ALGO_NCCL ? 65535 : l.params.sync.layout.max_blocks;
  if (l.blocks < 1 || l.blocks > limit) {
    return ARNORM_FAIL(ARNORM_ERROR_INTERNAL, "launch_add_rmsnorm: %d blocks outside [1, %d]", l.blocks, limit);
  }
  // Peer-memory kernels run only the CTAs that carry data (EPOCH in sync.cuh
  // keeps the call counters); the norm after NCCL has no epoch and runs one
  // CTA per row.
  const FusedParams& params = l.params;
  if (l.wide) {
    // Every CTA resident at once, as for the clusters below.
    cudaError_t error = cudaSuccess;
    const int fit = max_active_wide(kernel, &error);
    if (fit < 0) {
      return ARNORM_FAIL(ARNORM_ERROR_CUDA, "launch_add_rmsnorm: occupancy query failed: %s",
                         cudaGetErrorString(error));
    }
    const int resident = fit / l.gpu_share;
    if (resident < 1) {
      return ARNORM_FAIL(ARNORM_ERROR_CUDA, "launch_add_rmsnorm: no CTA of %d threads fits this GPU", kWideThreads);
    }
    return launch_peer_kernel(kernel, std::min(l.blocks, resident), params, l.pdl, stream, 0, kWideThreads);
  }
  if (l.algo != ARNORM_ALGO_NCCL && l.params.cluster > 0) {
    // Every CTA must be resident at once (a resident CTA may wait for a unit
    // another CTA of this rank pushes). The split kernels pair no CTAs
    // across ranks, so this local limit may differ between ranks.
    const int c = l.params.cluster;
    // The query's grid must be whole clusters (max_blocks need not divide by c).
    const int query_grid = l.params.sync.layout.max_blocks / c * c;
    // SHARED GPU: the occupancy query is for the whole GPU and a cluster
    // needs its CTAs in one GPC, so each of the k ranks takes whole clusters,
    // floor(fit / k) of them; 1/k of the CTAs, rounded to whole clusters,
    // could ask more of some GPC than it holds.
    cudaError_t error = cudaSuccess;
    const int fit = max_active_clusters(kernel, c, query_grid, &error);
    if (fit < 0) {
      return ARNORM_FAIL(ARNORM_ERROR_CUDA, "launch_add_rmsnorm: occupancy query failed: %s",
                         cudaGetErrorString(error));
    }
    const int resident = fit / l.gpu_share * c;
    if (resident < c) {
      return ARNORM_FAIL(ARNORM_ERROR_CUDA, "launch_add_rmsnorm: no cluster of %d CTAs fits this GPU", c);
    }
    return launch_peer_kernel(kernel, std::min(l.blocks, resident), params, l.pdl, stream, c);
  }
  if (l.algo == ARNORM_ALGO_TWOSHOT || l.pipelined) {
    return launch_peer_kernel(kernel, l.blocks, params, l.pdl, stream, 0, kFusedTwoShotThreads);
  }
  if (l.algo != ARNORM_ALGO_NCCL) return launch_peer_kernel(kernel, l.blocks, params, l.pdl, stream);
  kernel<<<l.blocks, kThreadsPerBlock, 0, stream>>>(params);
  ARNORM_CUDA_TRY(cudaGetLastError());
  return ARNORM_SUCCESS;
}

}  // namespace arnorm
