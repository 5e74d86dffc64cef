// The one entry from host code into device code: validated, planned
// parameters in, one kernel launch out, launch errors reported.
#pragma once

#include <cuda_runtime_api.h>

#include "arnorm/arnorm.h"
#include "core/plan.h"
#include "device/kernel_params.h"

namespace arnorm {

struct AllReduceLaunch {
  AllReduceParams params;
  bool pdl;                // programmatic dependent launch (PDL in sync.cuh)
  arnormAlgorithm_t algo;  // ONESHOT or TWOSHOT
  bool ll;                 // over LL words, else sentinel units
  arnormDataType_t dtype;
  bool vectorized;         // 16-byte packs (caller pointers 16-byte aligned)
  int blocks;
};

arnormStatus_t launch_allreduce(const AllReduceLaunch& launch, cudaStream_t stream);

struct AddRmsNormLaunch {
  FusedParams params;
  bool pdl;  // programmatic dependent launch for the peer kernels (PDL in sync.cuh)
  bool ll;   // over LL words (the split kernels and the one-CTA-per-row one-shot), else sentinel units
  arnormAlgorithm_t algo;  // ONESHOT, TWOSHOT, or NCCL (the norm alone, sums already in params.in)
  arnormDataType_t dtype;
  arnormDataType_t weight_dtype;
  bool vectorized;  // hidden % 8 == 0 and every caller pointer 16-byte aligned
  bool wide;        // split one-shot as WIDE CTAs of kWideThreads (fused_wide, core/plan.h)
  bool pipelined = false;  // one-shot over the two-shot's pipeline (FusedRoute::pipelined)
  int blocks;
  int gpu_share = 1;  // SHARED GPU: ranks of this process on this GPU; resident limits divide by it
};

// Defined in launch_fused.cu; the kernel instances in fused_select_<type>.cu.
arnormStatus_t launch_add_rmsnorm(const AddRmsNormLaunch& launch, cudaStream_t stream);

// Launches a peer-memory kernel on `grid` CTAs (those that carry data) of
// `threads` threads, with programmatic stream serialization when `pdl`, in
// thread-block clusters of `cluster` CTAs when cluster > 0.
template <typename P>
arnormStatus_t launch_peer_kernel(void (*kernel)(P), int grid, const P& params, bool pdl, cudaStream_t stream,
                                  int cluster = 0, int threads = kThreadsPerBlock);

// Whether this build has code the current device can run (its
// architectures are CMAKE_CUDA_ARCHITECTURES); UNSUPPORTED naming the
// device's compute capability if not. Checked at creation, before anything
// is allocated, so such a GPU gets one clear error instead of a failed launch.
arnormStatus_t check_kernels_loadable(int device, int major, int minor);

// Setup probe: stores a token into every peer's ProbeBlock and copies every
// peer's ControlBlock::identity into `identities` (device memory, kMaxRanks).
arnormStatus_t launch_probe(const SyncParams& sync, uint64_t token, uint64_t* identities,
                            cudaStream_t stream);

}  // namespace arnorm
