// Bootstraps on top of NCCL: the all-gather callback runs ncclAllGather on a
// private stream through a device bounce buffer.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>

#include "arnorm/arnorm_nccl.h"
#include "comm/communicator.h"
#include "comm/nccl_calls.h"
#include "core/status.h"

namespace arnorm {
namespace {

struct NcclAllGather {
  ncclComm_t comm = nullptr;
  int world = 0;
  cudaStream_t stream = nullptr;
  char* buffer = nullptr;  // [world + 1] * capacity: the gathered slots, then this rank's send slot
  size_t capacity = 0;

  ~NcclAllGather() {
    if (buffer) cudaFree(buffer);
    if (stream) cudaStreamDestroy(stream);
  }
};

int nccl_allgather(const void* send, void* recv, size_t bytes, void* user) {
  auto* s = static_cast<NcclAllGather*>(user);
  if (bytes > s->capacity) {
    if (s->buffer) cudaFree(s->buffer);
    s->buffer = nullptr;
    if (cudaMalloc(&s->buffer, (s->world + 1) * bytes) != cudaSuccess) return 1;
    s->capacity = bytes;
  }
  char* send_slot = s->buffer + s->world * s->capacity;
  if (cudaMemcpyAsync(send_slot, send, bytes, cudaMemcpyHostToDevice, s->stream) != cudaSuccess) return 2;
  // A nonblocking comm may answer ncclInProgress; creation waits for every
  // rank as the bootstrap does.
  if (nccl_settle(s->comm, ncclAllGather(send_slot, s->buffer, bytes, ncclChar, s->comm, s->stream)) != ncclSuccess)
    return 3;
  if (cudaMemcpyAsync(recv, s->buffer, s->world * bytes, cudaMemcpyDeviceToHost, s->stream) != cudaSuccess) return 4;
  return cudaStreamSynchronize(s->stream) == cudaSuccess ? 0 : 5;
}

}  // namespace
}  // namespace arnorm

extern "C" arnormStatus_t arnormCommCreateFromNccl(arnormComm_t* comm, ncclComm_t nccl,
                                                   const arnormConfig_t* config) {
  return arnorm::guarded("arnormCommCreateFromNccl", [&]() -> arnormStatus_t {
    using namespace arnorm;
    clear_last_error();
    // (A NULL comm is refused by arnormCommCreate in its first agreed step,
    // so that the other ranks do not wait for this one in the bootstrap; a
    // NULL nccl cannot take part in it at all.)
    if (nccl == nullptr) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "arnormCommCreateFromNccl: nccl is NULL (no collective step was started; the other ranks "
                         "will wait in the bootstrap)");
    }
    int rank = 0, world = 0, device = 0;
    if (ncclCommUserRank(nccl, &rank) != ncclSuccess || ncclCommCount(nccl, &world) != ncclSuccess ||
        ncclCommCuDevice(nccl, &device) != ncclSuccess) {
      return ARNORM_FAIL(ARNORM_ERROR_NCCL, "arnormCommCreateFromNccl: cannot query the NCCL communicator");
    }
    DeviceGuard guard(device);
    const RelaxedCaptureMode relaxed;  // CAPTURE-SAFE SET-UP
    NcclAllGather state;
    state.comm = nccl;
    state.world = world;
    if (cudaStreamCreateWithFlags(&state.stream, cudaStreamNonBlocking) != cudaSuccess) {
      return ARNORM_FAIL(ARNORM_ERROR_CUDA, "arnormCommCreateFromNccl: cannot create the bootstrap stream");
    }
    const arnormBootstrap_t bootstrap{nccl_allgather, &state};
    if (config != nullptr &&
        (config->struct_size < offsetof(arnormConfig_t, timeout_seconds) || config->struct_size > (1u << 16))) {
      // arnormCommCreate refuses it in its first agreed step, on every rank.
      return arnormCommCreate(comm, rank, world, device, bootstrap, config);
    }
    arnormConfig_t cfg = ARNORM_CONFIG_INIT;
    if (config != nullptr) std::memcpy(&cfg, config, std::min(sizeof(cfg), config->struct_size));
    cfg.struct_size = sizeof(cfg);
    cfg.nccl_comm = nccl;
    return arnormCommCreate(comm, rank, world, device, bootstrap, &cfg);
  });
}

extern "C" arnormStatus_t arnormCommCreateFromNcclId(arnormComm_t* comm, ncclUniqueId id, int rank,
                                                     int world_size, int device,
                                                     const arnormConfig_t* config) {
  return arnorm::guarded("arnormCommCreateFromNcclId", [&]() -> arnormStatus_t {
    using namespace arnorm;
    clear_last_error();
    // A NULL comm still joins NCCL's initialisation and creation's first
    // agreed step, which refuses it on every rank.
    if (comm != nullptr) *comm = nullptr;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count) {
      cudaGetLastError();
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "arnormCommCreateFromNcclId: device %d does not exist", device);
    }
    DeviceGuard guard(device);
    const RelaxedCaptureMode relaxed;  // CAPTURE-SAFE SET-UP (NCCL's own set-up too)
    // Waits for every rank as ncclCommInitRank does (NCCL_COMM_BLOCKING=0
    // may make it nonblocking: settled here).
    ncclComm_t nccl = nullptr;
    ncclResult_t r = ncclCommInitRank(&nccl, world_size, id, rank);
    if (nccl != nullptr) r = nccl_settle(nccl, r);
    if (r != ncclSuccess) {
      if (nccl != nullptr) ncclCommAbort(nccl);
      return ARNORM_FAIL(ARNORM_ERROR_NCCL, "arnormCommCreateFromNcclId: ncclCommInitRank failed: %s",
                         ncclGetErrorString(r));
    }
    const arnormStatus_t st = arnormCommCreateFromNccl(comm, nccl, config);
    if (st != ARNORM_SUCCESS) {
      const std::string msg = last_error();
      ncclCommAbort(nccl);  // a rank that failed creation may leave the comm with work in flight
      return restore_last_error(st, msg);
    }
    (*comm)->owns_nccl = true;
    return ARNORM_SUCCESS;
  });
}
