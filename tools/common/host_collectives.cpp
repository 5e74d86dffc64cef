#include <stdint.h>

#include "check.h"
#include "launcher.h"

namespace arnorm_tools {

HostCollectives::HostCollectives(ncclComm_t comm, cudaStream_t stream)
    : comm_(comm), stream_(stream) {}

HostCollectives::~HostCollectives() {
  // Best effort: a failed free at teardown changes nothing for the caller.
  if (bounce_ != nullptr) cudaFree(bounce_);
}

int HostCollectives::reserve(size_t bytes) {
  if (bytes <= bounce_bytes_) return 0;
  if (bounce_ != nullptr) {
    TOOLS_CUDA_TRY(cudaStreamSynchronize(stream_));
    TOOLS_CUDA_TRY(cudaFree(bounce_));
    bounce_ = nullptr;
    bounce_bytes_ = 0;
  }
  const size_t rounded = (bytes + 4095) & ~static_cast<size_t>(4095);
  TOOLS_CUDA_TRY(cudaMalloc(&bounce_, rounded));
  bounce_bytes_ = rounded;
  return 0;
}

int HostCollectives::allgather(const void* send, void* recv, size_t bytes) {
  if (bytes == 0) return 0;
  int world = 0, rank = 0;
  TOOLS_NCCL_TRY(ncclCommCount(comm_, &world));
  TOOLS_NCCL_TRY(ncclCommUserRank(comm_, &rank));
  if (reserve(static_cast<size_t>(world) * bytes) != 0) return 1;
  uint8_t* all = static_cast<uint8_t*>(bounce_);
  uint8_t* mine = all + static_cast<size_t>(rank) * bytes;
  TOOLS_CUDA_TRY(cudaMemcpyAsync(mine, send, bytes, cudaMemcpyHostToDevice, stream_));
  // In place: this rank's slot already holds its contribution.
  TOOLS_NCCL_TRY(ncclAllGather(mine, all, bytes, ncclInt8, comm_, stream_));
  TOOLS_CUDA_TRY(cudaMemcpyAsync(recv, all, static_cast<size_t>(world) * bytes,
                                 cudaMemcpyDeviceToHost, stream_));
  TOOLS_CUDA_TRY(cudaStreamSynchronize(stream_));
  return 0;
}

int HostCollectives::allreduce_double(double* value, ncclRedOp_t op) {
  if (reserve(sizeof(double)) != 0) return 1;
  TOOLS_CUDA_TRY(cudaMemcpyAsync(bounce_, value, sizeof(double), cudaMemcpyHostToDevice, stream_));
  TOOLS_NCCL_TRY(ncclAllReduce(bounce_, bounce_, 1, ncclDouble, op, comm_, stream_));
  TOOLS_CUDA_TRY(cudaMemcpyAsync(value, bounce_, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  TOOLS_CUDA_TRY(cudaStreamSynchronize(stream_));
  return 0;
}

int HostCollectives::max(double* value) { return allreduce_double(value, ncclMax); }
int HostCollectives::sum(double* value) { return allreduce_double(value, ncclSum); }

int HostCollectives::barrier() {
  // An all-reduce completes on a rank only after every rank has contributed.
  double token = 0.0;
  return allreduce_double(&token, ncclSum);
}

int host_allgather_callback(const void* send, void* recv, size_t bytes, void* host_collectives) {
  return static_cast<HostCollectives*>(host_collectives)->allgather(send, recv, bytes);
}

}  // namespace arnorm_tools
