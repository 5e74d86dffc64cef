// The production MemoryInspector: what the CUDA runtime and driver know
// about a pointer. The driver's cuMemGetAddressRange comes through the
// runtime's entry-point query, so libarnorm needs no link to libcuda.
#include <cuda.h>
#include <cuda_runtime_api.h>

#include "core/validate.h"

namespace arnorm {
namespace {

using GetAddressRangeFn = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);

GetAddressRangeFn address_range_fn() {
  static GetAddressRangeFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<GetAddressRangeFn>(nullptr);
    }
    return reinterpret_cast<GetAddressRangeFn>(p);
  }();
  return fn;
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
    if (f.is_device && a.type == cudaMemoryTypeDevice) {
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

  bool stream_device(cudaStream_t stream, int* device) const override {
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
