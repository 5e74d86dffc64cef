// arnorm-push-probe: how fast SM stores (and loads) move data between the
// GPUs of one host, by grid shape and traffic pattern: the floor under the
// two-shot's movers (docs/perf-notes.md, next step 1). Not a test: it asserts
// nothing but its own set-up; it prints one row per measurement.
//
//   push 1->1    GPU 0's kernel stores 16-byte units into GPU 1's memory
//   pull 1<-1    GPU 0's kernel loads GPU 1's memory and stores locally
//   push all     every GPU at once stores 1/(N-1) of its bytes into each
//                peer: unit by unit to every peer in turn ("interleaved",
//                as the two-shot's reduce-scatter push) or one peer's part
//                after another ("blocked")
//   copy engine  cudaMemcpyPeerAsync of the same bytes, 1->1 and all at once
//   local        the same kernel storing into its own GPU's memory (HBM)
//
// GB/s is what leaves one GPU per second (for "all": per GPU, every GPU
// sending at once), from the median of --reps timed runs of --iters launches.
//
//   arnorm-push-probe [--bytes MiB] [--iters N] [--reps N]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

#define PROBE_CHECK(x)                                                                 \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "arnorm-push-probe: %s: %s\n", #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

constexpr int kMaxGpus = 8;

struct Targets {
  int4* dst[kMaxGpus];  // where each destination's part goes
  int n;                // destinations
};

// Every destination gets `units` 16-byte units of src (destination d reads
// src part d). Interleaved: unit u goes to every destination in turn before
// unit u + stride; blocked: all of destination 0's units, then 1's, ...
template <bool kInterleaved>
__global__ void push_kernel(const int4* __restrict__ src, Targets t, size_t units) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  const size_t first = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (kInterleaved) {
    for (size_t u = first; u < units; u += stride)
      for (int d = 0; d < t.n; ++d) t.dst[d][u] = src[d * units + u];
  } else {
    for (int d = 0; d < t.n; ++d)
      for (size_t u = first; u < units; u += stride) t.dst[d][u] = src[d * units + u];
  }
}

// Loads `units` from a peer's memory, stores them locally.
__global__ void pull_kernel(const int4* __restrict__ peer, int4* __restrict__ local, size_t units) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t u = blockIdx.x * size_t(blockDim.x) + threadIdx.x; u < units; u += stride) local[u] = peer[u];
}

struct Gpu {
  int4* src = nullptr;   // bytes: what it sends
  int4* recv = nullptr;  // bytes: what it receives (peer p's part at p's slot)
  cudaStream_t stream = nullptr;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs launch() on every GPU listed (as one timed step) iters times per rep;
// returns the median seconds of one step.
template <typename Launch>
double time_steps(const std::vector<Gpu>& gpus, const std::vector<int>& active, int iters, int reps, Launch launch) {
  std::vector<double> seconds;
  for (int rep = -1; rep < reps; ++rep) {  // rep -1 warms up
    for (int g : active) {
      PROBE_CHECK(cudaSetDevice(g));
      PROBE_CHECK(cudaStreamSynchronize(gpus[g].stream));
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i)
      for (int g : active) {
        PROBE_CHECK(cudaSetDevice(g));
        launch(g);
      }
    for (int g : active) {
      PROBE_CHECK(cudaSetDevice(g));
      PROBE_CHECK(cudaStreamSynchronize(gpus[g].stream));
    }
    PROBE_CHECK(cudaGetLastError());
    if (rep >= 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters);
  }
  return median(seconds);
}

void row(const char* what, int ctas, int threads, size_t bytes_out, double seconds) {
  if (ctas > 0) {
    std::printf("%-26s %6d %7d %10.1f %10.1f %9.1f\n", what, ctas, threads, bytes_out / 1048576.0, seconds * 1e6,
                bytes_out / seconds / 1e9);
  } else {
    std::printf("%-26s %6s %7s %10.1f %10.1f %9.1f\n", what, "-", "-", bytes_out / 1048576.0, seconds * 1e6,
                bytes_out / seconds / 1e9);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 64;
  int iters = 10, reps = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bytes") == 0 && i + 1 < argc) mib = std::strtoull(argv[++i], nullptr, 10);
    else if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: arnorm-push-probe [--bytes MiB (default 64, what one GPU sends)] [--iters N (10)] "
                   "[--reps N (5)]\n");
      return std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0 ? 0 : 2;
    }
  }
  if (mib < 1 || iters < 1 || reps < 1) {
    std::fprintf(stderr, "arnorm-push-probe: --bytes, --iters and --reps must be at least 1\n");
    return 2;
  }
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
    std::fprintf(stderr, "arnorm-push-probe: no CUDA GPU visible\n");
    return 1;
  }
  n = std::min(n, kMaxGpus);
  const size_t bytes = mib << 20;
  std::vector<Gpu> gpus(n);
  for (int g = 0; g < n; ++g) {
    PROBE_CHECK(cudaSetDevice(g));
    PROBE_CHECK(cudaStreamCreateWithFlags(&gpus[g].stream, cudaStreamNonBlocking));
    PROBE_CHECK(cudaMalloc(&gpus[g].src, bytes));
    PROBE_CHECK(cudaMalloc(&gpus[g].recv, bytes));
    PROBE_CHECK(cudaMemset(gpus[g].src, g + 1, bytes));
    for (int p = 0; p < n; ++p) {
      if (p == g) continue;
      int can = 0;
      PROBE_CHECK(cudaDeviceCanAccessPeer(&can, g, p));
      if (!can) {
        std::fprintf(stderr, "arnorm-push-probe: GPU %d cannot access GPU %d (no P2P)\n", g, p);
        return 1;
      }
      const cudaError_t e = cudaDeviceEnablePeerAccess(p, 0);
      if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) PROBE_CHECK(e);
      cudaGetLastError();
    }
  }
  cudaDeviceProp prop{};
  PROBE_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# arnorm-push-probe: %d x %s, %d SMs; %zu MiB sent per GPU per step, median of %d x %d steps\n", n,
              prop.name, prop.multiProcessorCount, mib, reps, iters);
  std::printf("%-26s %6s %7s %10s %10s %9s\n", "pattern", "CTAs", "threads", "MiB out", "us", "GB/s");

  const int sms = prop.multiProcessorCount;
  const int grids[] = {sms / 4, sms / 2, sms, 2 * sms};
  const int widths[] = {128, 256, 512};
  const size_t units = bytes / sizeof(int4);

  // One row per grid shape: launch(g, ctas, threads) on every GPU in `active`.
  auto sweep = [&](const char* what, size_t bytes_out, const std::vector<int>& active, auto launch) {
    for (int ctas : grids)
      for (int threads : widths)
        row(what, ctas, threads, bytes_out,
            time_steps(gpus, active, iters, reps, [&](int g) { launch(g, ctas, threads); }));
  };
  // GPU 0's stores into one buffer, local (the HBM reference) or GPU 1's.
  auto store_into = [&](int4* dst) {
    Targets t{};
    t.dst[0] = dst;
    t.n = 1;
    return [=](int g, int ctas, int threads) {
      push_kernel<true><<<ctas, threads, 0, gpus[g].stream>>>(gpus[g].src, t, units);
    };
  };
  sweep("local (HBM)", bytes, {0}, store_into(gpus[0].recv));
  if (n < 2) {
    std::printf("# one GPU: the peer rows need two or more\n");
    return 0;
  }
  sweep("push 1->1", bytes, {0}, store_into(gpus[1].recv));
  sweep("pull 1<-1", bytes, {0}, [&](int g, int ctas, int threads) {
    pull_kernel<<<ctas, threads, 0, gpus[g].stream>>>(gpus[1].src, gpus[g].recv, units);
  });
  row("copy engine 1->1", 0, 0, bytes, time_steps(gpus, {0}, iters, reps, [&](int g) {
        PROBE_CHECK(cudaMemcpyPeerAsync(gpus[1].recv, 1, gpus[g].src, g, bytes, gpus[g].stream));
      }));

  // Every GPU at once, a part of (bytes / (n-1)) to each peer, into the
  // peer's slot for this sender.
  std::vector<int> all(n);
  for (int g = 0; g < n; ++g) all[g] = g;
  const size_t part_units = units / (n - 1);
  const size_t out_bytes = part_units * (n - 1) * sizeof(int4);
  std::vector<Targets> targets(n);
  for (int g = 0; g < n; ++g) {
    targets[g].n = 0;
    for (int p = 0; p < n; ++p) {
      if (p == g) continue;
      const int slot = g < p ? g : g - 1;  // the sender's slot among p's n-1 peers
      targets[g].dst[targets[g].n++] = gpus[p].recv + slot * part_units;
    }
  }
  sweep("push all, interleaved", out_bytes, all, [&](int g, int ctas, int threads) {
    push_kernel<true><<<ctas, threads, 0, gpus[g].stream>>>(gpus[g].src, targets[g], part_units);
  });
  sweep("push all, blocked", out_bytes, all, [&](int g, int ctas, int threads) {
    push_kernel<false><<<ctas, threads, 0, gpus[g].stream>>>(gpus[g].src, targets[g], part_units);
  });
  row("copy engine, all", 0, 0, out_bytes, time_steps(gpus, all, iters, reps, [&](int g) {
        for (int d = 0, p = 0; p < n; ++p) {
          if (p == g) continue;
          PROBE_CHECK(cudaMemcpyPeerAsync(targets[g].dst[d], p, gpus[g].src + d * part_units, g,
                                          part_units * sizeof(int4), gpus[g].stream));
          ++d;
        }
      }));
  for (int g = 0; g < n; ++g) {
    cudaSetDevice(g);
    cudaFree(gpus[g].src);
    cudaFree(gpus[g].recv);
    cudaStreamDestroy(gpus[g].stream);
  }
  return 0;
}
