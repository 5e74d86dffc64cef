// Multi-GPU test launcher: `arnorm-gpu-tests [--world N] [--share-gpus] [gtest flags]`
// starts one process per GPU (N, default every visible GPU) and runs the
// GoogleTest suite in each. With fewer GPUs than it needs (2 unless --world
// says otherwise) it says SKIPPED and exits 0. `--world 1` runs the suite on
// one GPU: every kernel and every result check, nothing crossing NVLink and
// no rank waiting for another (tests that need a peer skip, saying so).
// `--world N --share-gpus` runs N ranks on however many GPUs there are (rank
// r on GPU r % GPUs): ranks on one GPU take turns, so every protocol and
// result check runs at world N, slowly, without NCCL (tests that need it
// skip). Only rank 0 prints the test log; other ranks print failures.
#include <execinfo.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "harness.h"

namespace arnorm_test {

namespace {
Env g_env;

// Non-zero ranks print failures only, prefixed with their rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed()) {
      std::fprintf(stderr, "[rank %d] FAILURE %s:%d\n%s\n", rank(), r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
    }
  }
};
}  // namespace

Env& env() { return g_env; }

// A crashing rank prints where, instead of only "killed by signal 11".
void print_backtrace_and_die(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  dprintf(2, "[rank %d] fatal signal %d; backtrace:\n", g_env.ctx.rank, sig);
  backtrace_symbols_fd(frames, n, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}

uint64_t hash_bytes(const void* data, size_t bytes) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

// A host collective that timed out (HostCollectives::set_timeout, said
// why) leaves the ranks out of step: every later test would wait or compare
// the wrong things, so the rank stops; the launcher then ends the others.
void stop_if_out_of_step(int status) {
  if (status == 0) return;
  std::fprintf(stderr, "[rank %d] stopping: a host collective timed out (above)\n", env().ctx.rank);
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(1);
}

bool same_on_all_ranks(uint64_t value) {
  std::vector<uint64_t> all(world());
  stop_if_out_of_step(env().host->allgather(&value, all.data(), sizeof(value)));
  for (uint64_t v : all)
    if (v != all[0]) return false;
  return true;
}

uint64_t sum_over_ranks(uint64_t value) {
  double v = static_cast<double>(value);
  stop_if_out_of_step(env().host->sum(&v));
  return static_cast<uint64_t>(v);
}

// Which barrier a rank is at: its test and the barrier's place in it. Every
// rank must be at the same one; a rank that skipped one (a check that ended
// the test early on it) would otherwise complete the others' barrier with
// its next one, and the ranks would go on out of step.
void barrier() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string test = info ? std::string(info->test_suite_name()) + "." + info->name() : "(between tests)";
  static std::string last_test;
  static uint64_t index = 0;
  if (test != last_test) last_test = test, index = 0;
  struct Place {
    uint64_t test_hash, index;
  };
  const Place mine{hash_bytes(test.data(), test.size()), ++index};
  std::vector<Place> all(world());
  stop_if_out_of_step(env().host->allgather(&mine, all.data(), sizeof(Place)));
  for (int r = 0; r < world(); ++r) {
    if (all[r].test_hash == mine.test_hash && all[r].index == mine.index) continue;
    std::fprintf(stderr,
                 "[rank %d] at barrier %llu of %s, rank %d is at another barrier (number %llu of another test, or "
                 "a collective that is not a barrier): the ranks are out of step (a check that ended a test early "
                 "on one of them?)\n",
                 env().ctx.rank, static_cast<unsigned long long>(mine.index), test.c_str(), r,
                 static_cast<unsigned long long>(all[r].index));
    stop_if_out_of_step(1);
  }
}

}  // namespace arnorm_test

int main(int argc, char** argv) {
  using namespace arnorm_test;
  // Before any CUDA call, for the ranks too: ranks of one process on one GPU
  // (CommInProcess) must not share a hardware queue, where one rank's kernel
  // waiting for another's would hold that kernel back. Overrides any value
  // the environment holds (1 is common in training set-ups).
  setenv("CUDA_DEVICE_MAX_CONNECTIONS", "32", 1);
  int world_size = 0;
  bool share_gpus = false;
  for (int i = 1; i < argc; ++i) {
    if (i + 1 < argc && std::strcmp(argv[i], "--world") == 0) world_size = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--share-gpus") == 0) share_gpus = true;
  }
  if (std::getenv("ARNORM_LAUNCH_RANK") == nullptr) {
    int count = 0;
    const cudaError_t counted = cudaGetDeviceCount(&count);
    if (counted != cudaSuccess) count = 0;
    if (share_gpus && world_size < 2) {
      std::fprintf(stderr, "arnorm-gpu-tests: --share-gpus needs --world N with N >= 2\n");
      return 2;
    }
    const int need = share_gpus ? 1 : world_size > 0 ? world_size : 2;
    if (count < need) {
      std::printf("arnorm-gpu-tests: SKIPPED: needs %d GPUs, %d visible%s%s (run on a machine with 2 or more "
                  "NVLink-connected NVIDIA GPUs)\n",
                  need, count, counted != cudaSuccess ? ": " : "",
                  counted != cudaSuccess ? cudaGetErrorString(counted) : "");
      return 0;
    }
    const int world = world_size > 0 ? world_size : count;
    std::printf("arnorm-gpu-tests: world size %d%s\n", world,
                world == 1                    ? " (one GPU: kernels and results only, no peer traffic)"
                : share_gpus && world > count ? " on fewer GPUs (ranks share GPUs in turns: protocols and "
                                                "results only, peer traffic through one GPU's memory, no NCCL)"
                                              : "");
    std::fflush(stdout);
  }
  Env& e = env();
  arnorm_tools::LaunchOptions launch;
  launch.no_gpu_exit_code = 0;
  launch.timeout_seconds = 1800.0;
  launch.min_world_size = world_size == 1 ? 1 : 2;
  launch.share_gpus = share_gpus;
  const int rc = arnorm_tools::launch_ranks(argc, argv, world_size, &e.ctx, launch);
  if (rc != -1) return rc;

  signal(SIGSEGV, print_backtrace_and_die);
  signal(SIGABRT, print_backtrace_and_die);
  ::testing::InitGoogleTest(&argc, argv);
  if (e.ctx.rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter);
  }
  // Ranks that share a GPU have no NCCL (it takes one GPU per rank): both
  // communicators then bootstrap through the host all-gather, and the tests
  // that compare with NCCL skip.
  if (cudaSetDevice(e.ctx.device) != cudaSuccess || cudaStreamCreateWithFlags(&e.stream, cudaStreamNonBlocking) != cudaSuccess ||
      (!e.ctx.shared_gpus && ncclCommInitRank(&e.nccl, e.ctx.world_size, e.ctx.nccl_id, e.ctx.rank) != ncclSuccess)) {
    std::fprintf(stderr, "[rank %d] setup of CUDA/NCCL failed\n", e.ctx.rank);
    return 1;
  }
  e.host = new arnorm_tools::HostCollectives(e.ctx);
  if (!e.host->ok()) return 1;
  // No test keeps its peers waiting at a barrier for minutes; a rank that
  // does is out of step (ARNORM_TEST_BARRIER_SECONDS: longer, for slow
  // wrappers such as compute-sanitizer).
  double barrier_seconds = 120;
  if (const char* v = std::getenv("ARNORM_TEST_BARRIER_SECONDS"); v != nullptr && *v != '\0') {
    char* end = nullptr;
    barrier_seconds = std::strtod(v, &end);
    if (end == v || *end != '\0' || !(barrier_seconds > 0)) {
      std::fprintf(stderr, "[rank %d] ARNORM_TEST_BARRIER_SECONDS='%s' is not a number of seconds above 0\n",
                   e.ctx.rank, v);
      return 2;
    }
  }
  e.host->set_timeout(barrier_seconds);
  // The default communicator bootstraps from the NCCL comm; the small one
  // through a caller-supplied all-gather callback.
  arnormBootstrap_t bs{&arnorm_tools::host_allgather_callback, e.host};
  // Without NCCL a fallback to it cannot work: fail with the reason instead.
  arnormConfig_t no_nccl = ARNORM_CONFIG_INIT;
  no_nccl.nccl_fallback = 0;
  const arnormStatus_t created = e.nccl ? arnormCommCreateFromNccl(&e.comm, e.nccl, nullptr)
                                        : arnormCommCreate(&e.comm, e.ctx.rank, e.ctx.world_size, e.ctx.device, bs, &no_nccl);
  if (created != ARNORM_SUCCESS) {
    std::fprintf(stderr, "[rank %d] creating the default communicator: %s\n", e.ctx.rank, arnormGetLastErrorString());
    return 1;
  }
  arnormConfig_t small = ARNORM_CONFIG_INIT;
  small.workspace_bytes = 512 << 10;
  small.nccl_comm = e.nccl;
  small.nccl_fallback = e.nccl != nullptr;
  if (arnormCommCreate(&e.small_comm, e.ctx.rank, e.ctx.world_size, e.ctx.device, bs, &small) != ARNORM_SUCCESS) {
    std::fprintf(stderr, "[rank %d] arnormCommCreate (small workspace): %s\n", e.ctx.rank, arnormGetLastErrorString());
    return 1;
  }
  const int result = RUN_ALL_TESTS();
  // Every rank's work on the communicators is complete before any frees its workspace.
  cudaDeviceSynchronize();
  barrier();
  arnormCommDestroy(e.small_comm);
  arnormCommDestroy(e.comm);
  delete e.host;
  if (e.nccl) ncclCommDestroy(e.nccl);
  return result;
}
