#include "device/launch.h"

#include "core/status.h"
#include "device/allreduce_kernels.cuh"

namespace arnorm {

namespace {

using AllReduceKernel = void (*)(AllReduceParams);

// Each kernel family's instances: the vector path for every rank capacity,
// the element-wise path (unaligned callers, rare) for kMaxRanks only.
template <typename T, bool kLL>
struct OneShot {
  template <bool kVec, int R>
  static AllReduceKernel get() { return allreduce_oneshot_kernel<T, kVec, R, kLL>; }
};
template <typename T>
struct TwoShotLL {
  template <bool kVec, int R>
  static AllReduceKernel get() { return allreduce_twoshot_ll_kernel<T, kVec, R>; }
};
template <typename T>
struct TwoShot {
  template <bool kVec, int R>
  static AllReduceKernel get() { return allreduce_twoshot_kernel<T, kVec, R>; }
};

template <typename F>
AllReduceKernel pick(bool vectorized, int world) {
  if (!vectorized) return F::template get<false, kMaxRanks>();
  switch (rank_capacity(world)) {
    case 2: return F::template get<true, 2>();
    case 4: return F::template get<true, 4>();
    default: return F::template get<true, kMaxRanks>();
  }
}

template <typename T>
arnormStatus_t launch_typed(const AllReduceLaunch& l, cudaStream_t stream) {
  AllReduceKernel kernel = nullptr;
  const int world = l.params.sync.world;
  if (l.algo == ARNORM_ALGO_ONESHOT) {
    kernel = l.ll ? pick<OneShot<T, true>>(l.vectorized, world) : pick<OneShot<T, false>>(l.vectorized, world);
  } else if (l.algo == ARNORM_ALGO_TWOSHOT && l.ll) {
    kernel = pick<TwoShotLL<T>>(l.vectorized, world);
  } else if (l.algo == ARNORM_ALGO_TWOSHOT) {
    kernel = pick<TwoShot<T>>(l.vectorized, world);
  } else {
    return ARNORM_FAIL(ARNORM_ERROR_INTERNAL, "launch_allreduce: algorithm %d has no kernel", l.algo);
  }
  // Only the CTAs that carry data run (EPOCH in sync.cuh keeps the counters).
  return launch_peer_kernel(kernel, l.blocks, l.params, l.pdl, stream);
}

__global__ void probe_kernel(SyncParams s, uint64_t token, uint64_t* identities) {
  const int q = threadIdx.x;
  if (q >= s.world) return;
  ProbeBlock* probe = reinterpret_cast<ProbeBlock*>(s.ws[q] + s.layout.probe_offset);
  *reinterpret_cast<volatile uint64_t*>(&probe->token[s.rank]) = token;
  const ControlBlock* c = reinterpret_cast<const ControlBlock*>(s.ws[q] + s.layout.control_offset);
  identities[q] = *reinterpret_cast<const volatile uint64_t*>(&c->identity);
  __threadfence_system();
}

}  // namespace

template <typename P>
arnormStatus_t launch_peer_kernel(void (*kernel)(P), int grid, const P& params, bool pdl, cudaStream_t stream,
                                  int cluster, int threads) {
  cudaLaunchAttribute attr[2] = {};
  unsigned n = 0;
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster > 0) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n++].val.clusterDim = {static_cast<unsigned>(cluster), 1, 1};
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(threads);
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = n;
  ARNORM_CUDA_TRY(cudaLaunchKernelEx(&cfg, kernel, params));
  return ARNORM_SUCCESS;
}
template arnormStatus_t launch_peer_kernel<AllReduceParams>(void (*)(AllReduceParams), int, const AllReduceParams&,
                                                            bool, cudaStream_t, int, int);
template arnormStatus_t launch_peer_kernel<FusedParams>(void (*)(FusedParams), int, const FusedParams&, bool,
                                                        cudaStream_t, int, int);

arnormStatus_t launch_allreduce(const AllReduceLaunch& l, cudaStream_t stream) {
  if (l.blocks < 1 || l.blocks > l.params.sync.layout.max_blocks) {
    return ARNORM_FAIL(ARNORM_ERROR_INTERNAL, "launch_allreduce: %d blocks outside [1, %d]", l.blocks,
                       l.params.sync.layout.max_blocks);
  }
  switch (l.dtype) {
    case ARNORM_FLOAT32: return launch_typed<float>(l, stream);
    case ARNORM_FLOAT16: return launch_typed<__half>(l, stream);
    case ARNORM_BFLOAT16: return launch_typed<__nv_bfloat16>(l, stream);
    case ARNORM_DTYPE_UNSET: break;  // refused by validation before any launch
  }
  return ARNORM_FAIL(ARNORM_ERROR_INTERNAL, "launch_allreduce: dtype %d has no kernel", l.dtype);
}

arnormStatus_t check_kernels_loadable(int device, int major, int minor) {
  if (major < 9) {
    return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                       "arnormCommCreate: device %d has compute capability %d.%d; arnorm needs 9.0 (Hopper) or "
                       "newer (thread-block clusters, programmatic dependent launch)",
                       device, major, minor);
  }
  cudaFuncAttributes attr{};
  const cudaError_t e = cudaFuncGetAttributes(&attr, probe_kernel);
  if (e == cudaSuccess) return ARNORM_SUCCESS;
  cudaGetLastError();  // leave no stale error behind
  return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                     "arnormCommCreate: this libarnorm has no code for device %d (compute capability %d.%d): %s; "
                     "rebuild with its architecture in CMAKE_CUDA_ARCHITECTURES (default 90)",
                     device, major, minor, cudaGetErrorString(e));
}

arnormStatus_t launch_probe(const SyncParams& sync, uint64_t token, uint64_t* identities,
                            cudaStream_t stream) {
  probe_kernel<<<1, kMaxRanks, 0, stream>>>(sync, token, identities);
  ARNORM_CUDA_TRY(cudaGetLastError());
  return ARNORM_SUCCESS;
}

}  // namespace arnorm
