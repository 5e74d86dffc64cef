/*
 * Ready-made bootstraps on top of NCCL. Part of libarnorm (which links NCCL).
 */
#ifndef ARNORM_ARNORM_NCCL_H
#define ARNORM_ARNORM_NCCL_H

#include <nccl.h>

#include "arnorm/arnorm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collective over the ranks of `nccl`. Rank, world size and device come from
 * `nccl`; the bootstrap all-gathers run through it, and it serves the NCCL
 * path too. `nccl` must outlive the communicator. `config` may be NULL;
 * its nccl_comm field is ignored. */
ARNORM_API arnormStatus_t arnormCommCreateFromNccl(arnormComm_t* comm, ncclComm_t nccl,
                                        const arnormConfig_t* config);

/* Collective: creates an NCCL communicator from `id` (made by
 * ncclGetUniqueId on one rank and shared by the caller), owned and destroyed
 * by the arnorm communicator, then proceeds as arnormCommCreateFromNccl.
 * Until ncclCommInitRank returns, NCCL's rules hold: a rank that fails
 * before it (a device that does not exist) leaves the others waiting there,
 * as a rank that never calls it would. Every later failure is agreed. */
ARNORM_API arnormStatus_t arnormCommCreateFromNcclId(arnormComm_t* comm, ncclUniqueId id, int rank,
                                          int world_size, int device,
                                          const arnormConfig_t* config);

#ifdef __cplusplus
}
#endif

#endif /* ARNORM_ARNORM_NCCL_H */
