// The one entry from host code into device code: validated, planned
// parameters in, one kernel launch out, launch errors reported.
#pragma once

#include <cuda_runtime_api.h>

#include "arnorm/arnorm.h"
#include "device/kernel_params.h"

namespace arnorm {

struct AllReduceLaunch {
  AllReduceParams params;
  arnormAlgorithm_t algo;  // ONESHOT or TWOSHOT
  arnormDataType_t dtype;
  bool vectorized;         // 16-byte packs (caller pointers 16-byte aligned)
  int blocks;
};

arnormStatus_t launch_allreduce(const AllReduceLaunch& launch, cudaStream_t stream);

// Setup probe: stores a token into every peer's ProbeBlock and copies every
// peer's ControlBlock::identity into `identities` (device memory, kMaxRanks).
arnormStatus_t launch_probe(const SyncParams& sync, uint64_t token, uint64_t* identities,
                            cudaStream_t stream);

}  // namespace arnorm
