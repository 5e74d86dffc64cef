// StreamHold (harness.h): a kernel that holds a stream until the host lets it go.
#include "harness.h"

namespace arnorm_test {
namespace {

__global__ void hold_stream(const volatile int* flag) {
  while (*flag == 0) __nanosleep(1000);
}

}  // namespace

StreamHold::StreamHold() {
  int* host = nullptr;
  if (cudaHostAlloc(&host, sizeof(int), cudaHostAllocMapped) != cudaSuccess ||
      cudaHostGetDevicePointer(&device_flag_, host, 0) != cudaSuccess) {
    if (host) cudaFreeHost(host);
    device_flag_ = nullptr;
    return;
  }
  flag_ = host;
  // Loaded now, on a stream of its own: a kernel's first launch (lazy
  // loading) may wait for the kernels in flight, which a test that holds a
  // stream behind a peer call must not have happen at hold().
  *flag_ = 1;
  cudaStream_t s = nullptr;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  hold_stream<<<1, 1, 0, s>>>(device_flag_);
  loaded_ = cudaStreamSynchronize(s) == cudaSuccess;
  cudaStreamDestroy(s);
}

StreamHold::~StreamHold() {
  if (flag_) cudaFreeHost(const_cast<int*>(flag_));
}

void StreamHold::hold(cudaStream_t stream) {
  *flag_ = 0;
  hold_stream<<<1, 1, 0, stream>>>(device_flag_);
}

void StreamHold::release() { *flag_ = 1; }

}  // namespace arnorm_test
