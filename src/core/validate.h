// Argument checking for every public operation: one path, run before
// anything is launched. Pure host logic over facts that a MemoryInspector
// supplies, so the host tests can drive it without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>

#include "arnorm/arnorm.h"

namespace arnorm {

// What the CUDA runtime (or a test double) knows about a pointer.
struct BufferFacts {
  bool is_device = false;  // device or managed memory
  int device = -1;         // owning device ordinal, when is_device
  bool has_range = false;  // allocation extent known
  uintptr_t base = 0;
  size_t size = 0;
};

class MemoryInspector {
 public:
  virtual ~MemoryInspector() = default;
  virtual BufferFacts inspect(const void* ptr) const = 0;
  // True for memory mapped piece by piece into a reserved address range
  // (cuMemMap, as PyTorch's expandable segments are), which the driver
  // reports one piece at a time: a buffer may run on into the next piece.
  // False for cudaMalloc and memory-pool allocations, which end where their
  // range ends. Asked only when a buffer runs past its range.
  virtual bool is_mapped_piece(const void* ptr) const = 0;
  // Device of `stream`; false if the stream is invalid.
  virtual bool stream_device(cudaStream_t stream, int* device) const = 0;
};

// The production inspector (cudaPointerGetAttributes, cuMemGetAddressRange).
const MemoryInspector& cuda_memory_inspector();

struct AllReduceCall {
  const void* sendbuf;
  void* recvbuf;
  size_t count;
  arnormDataType_t dtype;
  arnormAlgorithm_t algo;
  cudaStream_t stream;
};

// Checks a device buffer of `bytes` bytes named `name` for operation `op`.
arnormStatus_t validate_buffer(const char* op, const char* name, const void* ptr, size_t bytes,
                               size_t elem_size, int device, const MemoryInspector& mem);

arnormStatus_t validate_stream(const char* op, cudaStream_t stream, int device,
                               const MemoryInspector& mem);

// Everything about an all-reduce call except the communicator itself.
arnormStatus_t validate_allreduce(const AllReduceCall& call, int device, const MemoryInspector& mem);

// Everything about a fused all-reduce + add + RMSNorm call except the
// communicator itself.
arnormStatus_t validate_add_rmsnorm(const arnormAddRmsNormArgs_t* args, cudaStream_t stream, int device,
                                    const MemoryInspector& mem);

// True if [a, a+na) and [b, b+nb) share a byte.
inline bool ranges_overlap(const void* a, size_t na, const void* b, size_t nb) {
  const uintptr_t x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return na > 0 && nb > 0 && x < y + nb && y < x + na;
}

}  // namespace arnorm
