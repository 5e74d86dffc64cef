// The production MemoryInspector: what the CUDA runtime and driver know
// about a pointer. The driver's cuMemGetAddressRange comes through the
// runtime's entry-point query, so libarnorm needs no link to libcuda.
#include <cuda.h>
#include <cuda_runtime_api.h>

#include "core/validate.h"

namespace arnorm {
namespace {

using GetAddressRangeFn = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);
using StreamGetCtxFn = CUresult (*)(CUstream, CUcontext*);
using CtxGetDeviceFn = CUresult (*)(CUdevice*);
using CtxPushFn = CUresult (*)(CUcontext);
using CtxPopFn = CUresult (*)(CUcontext*);

void* driver_entry(const char* name) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q{};
  if (cudaGetDriverEntryPointByVersion(name, &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return p;
}

GetAddressRangeFn address_range_fn() {
  static GetAddressRangeFn fn = reinterpret_cast<GetAddressRangeFn>(driver_entry("cuMemGetAddressRange"));
  return fn;
}

using PointerGetAttributeFn = CUresult (*)(void*, CUpointer_attribute, CUdeviceptr);

// A cuMemMap'd piece: not managed, not legacy-IPC capable (cudaMalloc's
// memory is) and not from a memory pool (whose allocations are not either).
// Managed memory is not IPC capable either, and managed allocations may lie
// side by side: counting the next one as more of the buffer would let a
// call run past the end of a short one. Where the pool query fails the
// memory counts as no pool's.
bool mapped_piece(const void* ptr) {
  static auto get = reinterpret_cast<PointerGetAttributeFn>(driver_entry("cuPointerGetAttribute"));
  const auto p = reinterpret_cast<CUdeviceptr>(ptr);
  int managed = 1, legacy_ipc = 1;
  if (!get || get(&managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, p) != CUDA_SUCCESS || managed != 0) return false;
  if (get(&legacy_ipc, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, p) != CUDA_SUCCESS) return false;
  void* pool = nullptr;
  if (get(&pool, CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE, p) != CUDA_SUCCESS) pool = nullptr;
  return legacy_ipc == 0 && pool == nullptr;
}

// The device of a stream that may be under capture: cudaStreamGetDevice
// would invalidate the capture, the stream's context does not.
bool capturing_stream_device(cudaStream_t stream, int* device) {
  static auto get_ctx = reinterpret_cast<StreamGetCtxFn>(driver_entry("cuStreamGetCtx"));
  static auto push = reinterpret_cast<CtxPushFn>(driver_entry("cuCtxPushCurrent"));
  static auto pop = reinterpret_cast<CtxPopFn>(driver_entry("cuCtxPopCurrent"));
  static auto ctx_device = reinterpret_cast<CtxGetDeviceFn>(driver_entry("cuCtxGetDevice"));
  if (!get_ctx || !push || !pop || !ctx_device) return false;
  CUcontext ctx = nullptr;
  if (get_ctx(reinterpret_cast<CUstream>(stream), &ctx) != CUDA_SUCCESS || push(ctx) != CUDA_SUCCESS) return false;
  CUdevice dev = 0;
  const bool ok = ctx_device(&dev) == CUDA_SUCCESS;
  CUcontext popped = nullptr;
  pop(&popped);
  *device = static_cast<int>(dev);
  return ok;
}

class CudaMemoryInspector final : public MemoryInspector {
 public:
  BufferFacts inspect(const void* ptr) const override {
    BufferFacts f;
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, ptr) != cudaSuccess) {
      cudaGetLastError();
      return f;
    }
    f.is_device = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
    f.device = a.device;
    // Managed memory has a driver range too: a managed buffer shorter than
    // the call is refused like a cudaMalloc one, not written past its end.
    if (f.is_device) {
      if (GetAddressRangeFn fn = address_range_fn()) {
        CUdeviceptr base = 0;
        size_t size = 0;
        if (fn(&base, &size, reinterpret_cast<CUdeviceptr>(ptr)) == CUDA_SUCCESS) {
          f.has_range = true;
          f.base = static_cast<uintptr_t>(base);
          f.size = size;
        }
      }
    }
    return f;
  }

  bool is_mapped_piece(const void* ptr) const override { return mapped_piece(ptr); }

  bool stream_device(cudaStream_t stream, int* device) const override {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    if (capture != cudaStreamCaptureStatusNone) return capturing_stream_device(stream, device);
    if (cudaStreamGetDevice(stream, device) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return true;
  }
};

}  // namespace

const MemoryInspector& cuda_memory_inspector() {
  static const CudaMemoryInspector inspector;
  return inspector;
}

}  // namespace arnorm
