// One process per GPU, started by the program itself, plus small host-side
// collectives over shared host memory for exchanging results between those
// processes.
//
// Usage (the same binary is both parent and ranks):
//
//   arnorm_tools::RankContext ctx;
//   arnorm_tools::LaunchOptions opt;
//   opt.no_gpu_exit_code = 77;
//   opt.timeout_seconds = 600.0;
//   int rc = arnorm_tools::launch_ranks(argc, argv, 0, &ctx, opt);
//   if (rc != -1) return rc;   // parent: every rank has finished (or none could start)
//   ... this process is rank ctx.rank, on device ctx.device ...
//
// Parse the command line before calling launch_ranks, so that --help and usage
// errors are answered once by the parent, without touching a GPU.
#ifndef ARNORM_TOOLS_LAUNCHER_H
#define ARNORM_TOOLS_LAUNCHER_H

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stddef.h>

namespace arnorm_tools {

struct RankContext {
  int rank;
  int world_size;
  int device;            // CUDA device ordinal of this rank (rank, or rank % GPUs when shared)
  bool shared_gpus;      // more ranks than GPUs: NCCL cannot run (one rank per GPU only)
  int shm_fd;            // the launch's shared host memory (HostCollectives), inherited
  ncclUniqueId nccl_id;  // same on every rank: pass to ncclCommInitRank (unless shared_gpus)
};

// How the parent places ranks on GPUs.
struct LaunchOptions {
  int no_gpu_exit_code = 1;     // returned when too few GPUs are visible
  double timeout_seconds = 0;   // watchdog over all ranks; 0 = none
  int min_world_size = 1;       // fewer GPUs than this (and than world_size) is "too few"
  // Testing only: world_size may exceed the visible GPUs; rank r then runs on
  // GPU r % visible, and the ranks get ARNORM_ALLOW_SHARED_GPU=1 so that one
  // arnorm communicator accepts them. Ranks on one GPU take turns (time
  // slices of about a millisecond), so every wait for a peer costs a slice:
  // results and protocols are exercised at any world size, timings mean
  // nothing, and NCCL (which needs a GPU per rank) cannot be used.
  bool share_gpus = false;
};

// Exit status the parent returns when the watchdog fired.
constexpr int kLaunchTimeoutExitCode = 124;

// In a rank started by launch_ranks (ARNORM_LAUNCH_* set in the environment):
// fills *ctx and returns -1, meaning "you are a rank, go on". A malformed
// launch environment returns 1 after saying why.
//
// Otherwise acts as the parent and never returns -1:
//  - world_size <= 0 means every visible GPU. With no GPU, or fewer than
//    max(world_size, min_world_size) GPUs (unless share_gpus), prints one
//    line to stderr and returns no_gpu_exit_code (e.g. 77 for a ctest skip).
//  - creates the NCCL unique id (the NCCL bootstrap root then lives in this
//    process, which stays alive until every rank has exited) and the shared
//    host memory of HostCollectives, and spawns world_size copies of
//    /proc/self/exe with the same argv. Ranks inherit the environment plus
//    ARNORM_LAUNCH_{RANK,WORLD,NCCL_ID,PARENT,SHM_FD,GPUS}, and
//    NCCL_NVLS_ENABLE=0 unless it is set. The parent runs no kernel.
//  - with ARNORM_LAUNCH_WRAPPER set (e.g. "compute-sanitizer --tool
//    memcheck"), each rank runs under that command (split at spaces, no
//    quoting); a rank killed by a signal then shows as the wrapper's status.
//  - returns 0 when every rank exits 0. When one fails (non-zero exit or a
//    signal), the others get a short grace period, are then killed, and the
//    first failure's status is returned (128+signal for a signal). When
//    timeout_seconds > 0 and ranks are still running after it, all are killed
//    and kLaunchTimeoutExitCode is returned.
// Ranks die with the parent (PR_SET_PDEATHSIG), so a killed launcher leaves no
// orphans holding GPUs.
int launch_ranks(int argc, char** argv, int world_size, RankContext* ctx, const LaunchOptions& options);

// Collectives on host memory, for small control messages (results, names,
// barriers) outside the measured region: the ranks' slots in the shared
// memory the launcher made, and a barrier on an atomic generation count.
// Collective: every rank calls the same functions in the same order with the
// same sizes. All return 0 on success, non-zero after reporting the failure.
// A rank that never arrives leaves the others waiting in a barrier until the
// launcher's grace period or watchdog kills them, or, with set_timeout, until
// the timeout, when the barrier names the ranks that did not arrive and
// fails. None of them waits for GPU work: synchronise first where results on
// the device must be complete.
class HostCollectives {
 public:
  explicit HostCollectives(const RankContext& ctx);
  ~HostCollectives();
  HostCollectives(const HostCollectives&) = delete;
  HostCollectives& operator=(const HostCollectives&) = delete;
  bool ok() const { return shared_ != nullptr; }  // false: the mapping failed (reported)

  // recv receives world_size * bytes: rank r's `send` at offset r * bytes.
  int allgather(const void* send, void* recv, size_t bytes);
  int max(double* value);  // in place, across ranks
  int sum(double* value);  // in place, across ranks
  int barrier();           // returns once every rank has entered it
  // 0 (the default): barriers wait as long as it takes. Otherwise a barrier
  // that waits longer fails, reporting which ranks are behind; after that
  // the collectives are unusable (the ranks are out of step).
  void set_timeout(double seconds) { timeout_seconds_ = seconds; }

 private:
  int rank_, world_;
  void* shared_ = nullptr;  // the launcher's shared memory, mapped
  size_t shared_bytes_ = 0;
  double timeout_seconds_ = 0;
};

// Bytes of shared host memory a launch of `world` ranks needs.
size_t host_collectives_bytes(int world);

// Matches arnormAllGatherFn, so a HostCollectives can bootstrap an arnorm
// communicator: arnormBootstrap_t b{&host_allgather_callback, &collectives};
int host_allgather_callback(const void* send, void* recv, size_t bytes, void* host_collectives);

}  // namespace arnorm_tools

#endif  // ARNORM_TOOLS_LAUNCHER_H
