// arnorm-probe: hardware facts the phase clock's figures rest on, measured
// on one GPU with clock64 in thread 0 of one CTA (docs/perf-notes.md cites
// them). Not a test: it asserts nothing, it prints medians in cycles.
//
//   flag read    what op_read / op_begin pay for the call counter: a load of a word
//                the previous kernel stored, then a CTA barrier, by scope
//                and cache operator (volatile = the library's choice).
//   cold code    a straight run of kCodeFmas independent FMAs (16 bytes of
//                code each) run twice in one launch: pass 1 fetches the
//                code, pass 2 finds it in the SM's instruction caches.
//                Repeated launches show whether the caches keep it between
//                launches, and CUDA-graph replay whether a graph changes it.
//
//   arnorm-probe [--launches N] [--device D]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

#define PROBE_CHECK(x)                                                                   \
  do {                                                                                   \
    cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "arnorm-probe: %s: %s\n", #x, cudaGetErrorString(e_));       \
      return 1;                                                                          \
    }                                                                                    \
  } while (0)

enum class Read { kVolatile, kRelaxedGpu, kAcquireGpu, kCg, kWeak };
const char* name_of(Read r) {
  switch (r) {
    case Read::kVolatile: return "ld.volatile (sys, the library's op_read)";
    case Read::kRelaxedGpu: return "ld.relaxed.gpu";
    case Read::kAcquireGpu: return "ld.acquire.gpu";
    case Read::kCg: return "ld.global.cg (L2, weak)";
    case Read::kWeak: return "ld.global (weak, may hit L1)";
  }
  return "?";
}

template <Read kRead>
__device__ __forceinline__ uint64_t read_word(const uint64_t* p) {
  uint64_t v;
  if constexpr (kRead == Read::kVolatile) v = *reinterpret_cast<const volatile uint64_t*>(p);
  else if constexpr (kRead == Read::kRelaxedGpu) asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  else if constexpr (kRead == Read::kAcquireGpu) asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  else if constexpr (kRead == Read::kCg) v = __ldcg(p);
  else v = *p;
  return v;
}

// As op_read / op_begin: thread 0 reads the word the previous launch stored, the CTA
// waits for it; the launch ends by storing word + 1 (as op_end does).
template <Read kRead>
__global__ void flag_read_kernel(uint64_t* word, long long* cycles, int launch) {
  __shared__ uint64_t seen;
  const long long t0 = clock64();
  if (threadIdx.x == 0) seen = read_word<kRead>(word) + 1;
  __syncthreads();
  const long long t1 = clock64();
  if (threadIdx.x == 0) {
    cycles[launch] = t1 - t0;
    *word = seen;
  }
}

constexpr int kCodeFmas = 2048;  // 32 KiB of code per pass

#define PROBE_FMA4 \
  "fma.rn.f32 %0, %0, %4, %5;\n\tfma.rn.f32 %1, %1, %4, %5;\n\tfma.rn.f32 %2, %2, %4, %5;\n\tfma.rn.f32 %3, %3, %4, %5;\n\t"
#define PROBE_FMA16 PROBE_FMA4 PROBE_FMA4 PROBE_FMA4 PROBE_FMA4
#define PROBE_FMA64 PROBE_FMA16 PROBE_FMA16 PROBE_FMA16 PROBE_FMA16
#define PROBE_FMA256 PROBE_FMA64 PROBE_FMA64 PROBE_FMA64 PROBE_FMA64

// Pass p's time in cycles[launch * 2 + p]; the code of both passes is the
// same, so pass 2 runs from the instruction caches pass 1 filled.
__global__ void cold_code_kernel(float* sink, long long* cycles, int launch, float a, float b) {
  float x0 = threadIdx.x, x1 = x0 + 1.f, x2 = x0 + 2.f, x3 = x0 + 3.f;
#pragma unroll 1
  for (int pass = 0; pass < 2; ++pass) {
    __syncwarp();
    const long long t0 = clock64();
    // kCodeFmas FMAs: 8 x 256.
    asm volatile(PROBE_FMA256 PROBE_FMA256 PROBE_FMA256 PROBE_FMA256 PROBE_FMA256 PROBE_FMA256 PROBE_FMA256 PROBE_FMA256
                 : "+f"(x0), "+f"(x1), "+f"(x2), "+f"(x3)
                 : "f"(a), "f"(b));
    __syncwarp();
    const long long t1 = clock64();
    if (threadIdx.x == 0) cycles[launch * 2 + pass] = t1 - t0;
  }
  if (x0 + x1 + x2 + x3 == 12345.f) sink[threadIdx.x] = x0;
}

long long median(std::vector<long long> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

template <Read kRead>
int probe_flag_read(int launches, uint64_t* word, long long* cycles) {
  for (int i = 0; i < launches; ++i) flag_read_kernel<kRead><<<1, 256>>>(word, cycles, i);
  PROBE_CHECK(cudaGetLastError());
  PROBE_CHECK(cudaDeviceSynchronize());
  std::vector<long long> host(static_cast<size_t>(launches));
  PROBE_CHECK(cudaMemcpy(host.data(), cycles, host.size() * sizeof(long long), cudaMemcpyDeviceToHost));
  std::vector<long long> later(host.begin() + 1, host.end());
  std::printf("flag read   %-44s first launch %6lld  median of the next %d %6lld cycles\n", name_of(kRead), host[0],
              launches - 1, median(later));
  return 0;
}

int probe_cold_code(int launches, bool graph, float* sink, long long* cycles) {
  cudaStream_t s;
  PROBE_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  if (graph) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    PROBE_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < launches; ++i) cold_code_kernel<<<1, 128, 0, s>>>(sink, cycles, i, 1.0001f, 0.5f);
    PROBE_CHECK(cudaStreamEndCapture(s, &g));
    PROBE_CHECK(cudaGraphInstantiate(&ge, g, 0));
    for (int rep = 0; rep < 3; ++rep) PROBE_CHECK(cudaGraphLaunch(ge, s));
    PROBE_CHECK(cudaStreamSynchronize(s));
    PROBE_CHECK(cudaGraphExecDestroy(ge));
    PROBE_CHECK(cudaGraphDestroy(g));
  } else {
    for (int i = 0; i < launches; ++i) cold_code_kernel<<<1, 128, 0, s>>>(sink, cycles, i, 1.0001f, 0.5f);
    PROBE_CHECK(cudaStreamSynchronize(s));
  }
  PROBE_CHECK(cudaGetLastError());
  std::vector<long long> host(static_cast<size_t>(launches) * 2);
  PROBE_CHECK(cudaMemcpy(host.data(), cycles, host.size() * sizeof(long long), cudaMemcpyDeviceToHost));
  std::vector<long long> first, second;
  for (int i = 1; i < launches; ++i) {
    first.push_back(host[static_cast<size_t>(i) * 2]);
    second.push_back(host[static_cast<size_t>(i) * 2 + 1]);
  }
  std::printf("cold code   %d FMAs (%d KiB), %-12s launch 0: pass 1 %6lld pass 2 %6lld; median of launches 1..%d: pass 1 %6lld pass 2 %6lld cycles\n",
              kCodeFmas, kCodeFmas * 16 / 1024, graph ? "graph replay" : "stream", host[0], host[1], launches - 1,
              median(first), median(second));
  PROBE_CHECK(cudaStreamDestroy(s));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int launches = 64, device = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--launches") && i + 1 < argc) launches = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--device") && i + 1 < argc) device = std::atoi(argv[++i]);
    else {
      std::printf("usage: %s [--launches N (>= 2, default 64)] [--device D (default 0)]\n", argv[0]);
      return std::strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  if (launches < 2) {
    std::fprintf(stderr, "arnorm-probe: --launches must be at least 2\n");
    return 2;
  }
  PROBE_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop;
  PROBE_CHECK(cudaGetDeviceProperties(&prop, device));
  int clock_khz = 0;
  PROBE_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device));
  std::printf("# arnorm-probe on device %d: %s, %d SMs, SM clock %.2f GHz (max); %d launches each\n", device, prop.name,
              prop.multiProcessorCount, clock_khz / 1e6, launches);
  uint64_t* word = nullptr;
  long long* cycles = nullptr;
  float* sink = nullptr;
  PROBE_CHECK(cudaMalloc(&word, 256));
  PROBE_CHECK(cudaMemset(word, 0, 256));
  PROBE_CHECK(cudaMalloc(&cycles, sizeof(long long) * 2 * static_cast<size_t>(launches)));
  PROBE_CHECK(cudaMalloc(&sink, 128 * sizeof(float)));
  int rc = probe_flag_read<Read::kVolatile>(launches, word, cycles);
  rc = rc ? rc : probe_flag_read<Read::kRelaxedGpu>(launches, word, cycles);
  rc = rc ? rc : probe_flag_read<Read::kAcquireGpu>(launches, word, cycles);
  rc = rc ? rc : probe_flag_read<Read::kCg>(launches, word, cycles);
  rc = rc ? rc : probe_flag_read<Read::kWeak>(launches, word, cycles);
  rc = rc ? rc : probe_cold_code(launches, false, sink, cycles);
  rc = rc ? rc : probe_cold_code(launches, true, sink, cycles);
  cudaFree(word);
  cudaFree(cycles);
  cudaFree(sink);
  return rc;
}
