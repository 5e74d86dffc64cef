#include "launcher.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "check.h"

extern char** environ;

namespace arnorm_tools {
namespace {

constexpr const char* kEnvRank = "ARNORM_LAUNCH_RANK";
constexpr const char* kEnvWorld = "ARNORM_LAUNCH_WORLD";
constexpr const char* kEnvNcclId = "ARNORM_LAUNCH_NCCL_ID";
constexpr const char* kEnvParent = "ARNORM_LAUNCH_PARENT";
constexpr const char* kEnvShmFd = "ARNORM_LAUNCH_SHM_FD";
constexpr const char* kEnvGpus = "ARNORM_LAUNCH_GPUS";  // GPUs the ranks cycle over
constexpr const char* kEnvWrapper = "ARNORM_LAUNCH_WRAPPER";  // in the parent: a command in front of each rank
constexpr const char* kEnvWrapped = "ARNORM_LAUNCH_WRAPPED";  // in a rank: its parent is that command
// Time the surviving ranks get, after one failed, to notice on their own
// (peer timeouts) and report why, before they are killed.
constexpr double kGraceSeconds = 3.0;
constexpr useconds_t kPollMicros = 10000;

double now_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string to_hex(const void* data, size_t bytes) {
  static const char kDigits[] = "0123456789abcdef";
  const unsigned char* p = static_cast<const unsigned char*>(data);
  std::string out(2 * bytes, '0');
  for (size_t i = 0; i < bytes; ++i) {
    out[2 * i] = kDigits[p[i] >> 4];
    out[2 * i + 1] = kDigits[p[i] & 15];
  }
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool from_hex(const char* text, void* data, size_t bytes) {
  if (strlen(text) != 2 * bytes) return false;
  unsigned char* p = static_cast<unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    int hi = hex_digit(text[2 * i]), lo = hex_digit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    p[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

bool parse_long(const char* text, long* value) {
  if (text == nullptr || *text == '\0') return false;
  char* end = nullptr;
  errno = 0;
  *value = strtol(text, &end, 10);
  return errno == 0 && *end == '\0';
}

// The rank side: the environment written by the parent, below.
int rank_context(RankContext* ctx) {
  long rank = -1, world = -1, parent = -1, shm_fd = -1, gpus = -1;
  const char* id_hex = getenv(kEnvNcclId);
  if (!parse_long(getenv(kEnvRank), &rank) || !parse_long(getenv(kEnvWorld), &world) ||
      !parse_long(getenv(kEnvParent), &parent) || !parse_long(getenv(kEnvShmFd), &shm_fd) ||
      !parse_long(getenv(kEnvGpus), &gpus) || world < 1 || rank < 0 || rank >= world || shm_fd < 0 ||
      gpus < 1 || gpus > world || id_hex == nullptr || !from_hex(id_hex, &ctx->nccl_id, sizeof(ctx->nccl_id))) {
    fprintf(stderr, "%s: malformed ARNORM_LAUNCH_* variables in the environment; unset them to launch normally\n",
            program_invocation_short_name);
    return 1;
  }
  // Die with the launcher. If it is already gone, the NCCL bootstrap root
  // (which lives in it) is gone too: stop now rather than hang in init.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // (Under a wrapper the direct parent is the wrapper, which dies with the
  // launcher: then the launcher only has to be alive.)
  const bool wrapped = getenv(kEnvWrapped) != nullptr;
  if (getppid() != static_cast<pid_t>(parent) && !(wrapped && kill(static_cast<pid_t>(parent), 0) == 0)) {
    fprintf(stderr, "[rank %ld] the launching process %ld has exited; giving up\n", rank, parent);
    return 1;
  }
  set_log_rank(static_cast<int>(rank));
  ctx->rank = static_cast<int>(rank);
  ctx->world_size = static_cast<int>(world);
  ctx->device = static_cast<int>(rank % gpus);
  ctx->shared_gpus = gpus < world;
  ctx->shm_fd = static_cast<int>(shm_fd);
  return -1;
}

// The parent's environment minus stale launch variables, plus this rank's.
std::vector<std::string> rank_environment(int rank, int world, int gpus, int shm_fd, bool wrapped,
                                          const std::string& id_hex) {
  std::vector<std::string> env;
  bool has_nvls = false;
  for (char** e = environ; *e != nullptr; ++e) {
    if (strncmp(*e, "ARNORM_LAUNCH_", 14) == 0) continue;
    if (gpus < world && strncmp(*e, "ARNORM_ALLOW_SHARED_GPU=", 24) == 0) continue;  // set below
    if (strncmp(*e, "NCCL_NVLS_ENABLE=", 17) == 0) has_nvls = true;
    env.emplace_back(*e);
  }
  // NVLink multicast (NVLS) is not to be used on the machines this runs on.
  if (!has_nvls) env.emplace_back("NCCL_NVLS_ENABLE=0");
  env.push_back(std::string(kEnvRank) + "=" + std::to_string(rank));
  env.push_back(std::string(kEnvWorld) + "=" + std::to_string(world));
  env.push_back(std::string(kEnvNcclId) + "=" + id_hex);
  env.push_back(std::string(kEnvParent) + "=" + std::to_string(getpid()));
  env.push_back(std::string(kEnvShmFd) + "=" + std::to_string(shm_fd));
  env.push_back(std::string(kEnvGpus) + "=" + std::to_string(gpus));
  // One arnorm communicator refuses ranks on one GPU unless told it is a test.
  if (gpus < world) env.emplace_back("ARNORM_ALLOW_SHARED_GPU=1");
  if (wrapped) env.push_back(std::string(kEnvWrapped) + "=1");
  return env;
}

// The command that starts a rank: this program with the same arguments, or,
// with ARNORM_LAUNCH_WRAPPER set in the parent, that command line in front of
// it (split at spaces, no quoting). A tool such as compute-sanitizer has to
// run each rank itself: started around the parent only, it never instruments
// the ranks (measured: a memcheck run of the parent left the ranks' kernels
// at their uninstrumented speed and printed one summary, the parent's). A
// rank killed by a signal then shows as the wrapper's exit status.
std::vector<std::string> rank_command(char** argv) {
  std::vector<std::string> cmd;
  if (const char* wrapper = getenv(kEnvWrapper)) {
    std::string word;
    for (const char* c = wrapper;; ++c) {
      if (*c == ' ' || *c == '\0') {
        if (!word.empty()) cmd.push_back(word);
        word.clear();
        if (*c == '\0') break;
      } else {
        word += *c;
      }
    }
  }
  if (cmd.empty()) {
    cmd.emplace_back("/proc/self/exe");
  } else {
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    cmd.emplace_back(n > 0 ? std::string(self, static_cast<size_t>(n)) : std::string(argv[0]));
  }
  for (char** a = argv + 1; *a != nullptr; ++a) cmd.emplace_back(*a);
  return cmd;
}

bool wrapper_requested() {
  const char* w = getenv(kEnvWrapper);
  return w != nullptr && strspn(w, " ") != strlen(w);
}

int spawn_rank(char** argv, std::vector<std::string> env, pid_t* pid) {
  std::vector<char*> envp;
  for (std::string& s : env) envp.push_back(&s[0]);
  envp.push_back(nullptr);
  std::vector<std::string> cmd = rank_command(argv);
  std::vector<char*> args;
  for (std::string& s : cmd) args.push_back(&s[0]);
  args.push_back(nullptr);
  if (wrapper_requested()) {
    // fork + exec rather than posix_spawn, so that the wrapper dies with the
    // launcher (PR_SET_PDEATHSIG survives exec) and takes its rank along.
    // Between fork and exec only async-signal-safe calls.
    const pid_t launcher = getpid();
    sigset_t none;
    sigemptyset(&none);
    const pid_t child = fork();
    if (child < 0) {
      TOOLS_ERROR("fork: %s", strerror(errno));
      return 1;
    }
    if (child == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != launcher) _exit(127);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execvpe(args[0], args.data(), envp.data());
      _exit(127);
    }
    *pid = child;
    return 0;
  }
  args[0] = argv[0];  // the rank's argv[0] stays the caller's
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  int err = posix_spawn(pid, "/proc/self/exe", nullptr, &attr, args.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  if (err != 0) {
    TOOLS_ERROR("posix_spawn(/proc/self/exe): %s", strerror(err));
    return 1;
  }
  return 0;
}

struct Child {
  pid_t pid;
  bool running;
};

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

void kill_running(std::vector<Child>& children) {
  for (const Child& c : children)
    if (c.running) kill(c.pid, SIGKILL);
}

// Reaps every child. Invariant: on return no child is running, so no rank
// outlives the bootstrap root or the caller's exit code.
int wait_ranks(std::vector<Child>& children, double timeout_seconds) {
  const double start = now_seconds();
  double kill_at = -1.0;  // set once a rank has failed
  int first_failure = 0;
  bool timed_out = false;
  size_t running = children.size();
  while (running > 0) {
    bool reaped = false;
    for (size_t r = 0; r < children.size(); ++r) {
      Child& c = children[r];
      if (!c.running) continue;
      int status = 0;
      pid_t got = waitpid(c.pid, &status, WNOHANG);
      if (got == 0 || (got < 0 && errno == EINTR)) continue;
      c.running = false;
      --running;
      reaped = true;
      if (got < 0) status = 1 << 8;  // lost track of it: count as a failure
      if (status == 0 || first_failure != 0) continue;
      first_failure = status_code(status);
      if (WIFSIGNALED(status) && !timed_out && kill_at < 0) {
        fprintf(stderr, "%s: rank %zu was killed by signal %d (%s)\n",
                program_invocation_short_name, r, WTERMSIG(status), strsignal(WTERMSIG(status)));
      }
      if (kill_at < 0) kill_at = now_seconds() + kGraceSeconds;
    }
    if (running == 0) break;
    const double now = now_seconds();
    if (kill_at >= 0 && now >= kill_at) {
      fprintf(stderr,
              "%s: a rank failed (status %d); killing the %zu rank(s) still running after %g s\n",
              program_invocation_short_name, first_failure, running, kGraceSeconds);
      kill_running(children);
      kill_at = now + 3600.0;  // SIGKILL sent; only reaping is left
    }
    if (!timed_out && timeout_seconds > 0 && now - start >= timeout_seconds) {
      fprintf(stderr,
              "%s: watchdog: %zu rank(s) still running after the %g s timeout; killing them\n",
              program_invocation_short_name, running, timeout_seconds);
      kill_running(children);
      timed_out = true;
    }
    if (!reaped) usleep(kPollMicros);
  }
  fflush(stderr);
  if (timed_out) return kLaunchTimeoutExitCode;
  return first_failure;
}

std::string gpu_advice(int needed) {
  return "run it on a machine with " + std::to_string(needed) + " or more NVIDIA GPUs";
}

}  // namespace

int launch_ranks(int argc, char** argv, int world_size, RankContext* ctx, const LaunchOptions& options) {
  (void)argc;  // argv is null-terminated; the ranks get it unchanged
  if (getenv(kEnvRank) != nullptr) return rank_context(ctx);

  const int no_gpu_exit_code = options.no_gpu_exit_code;
  const int needed = options.share_gpus ? 1 : std::max({world_size, options.min_world_size, 1});
  int visible = 0;
  cudaError_t err = cudaGetDeviceCount(&visible);
  if (err != cudaSuccess || visible == 0) {
    fprintf(stderr, "%s: no CUDA GPU visible (cudaGetDeviceCount: %s); %s\n",
            program_invocation_short_name,
            err != cudaSuccess ? cudaGetErrorString(err) : "0 devices", gpu_advice(needed).c_str());
    return no_gpu_exit_code;
  }
  if (visible < needed) {
    fprintf(stderr, "%s: %d ranks needed but only %d CUDA GPU%s visible; %s\n",
            program_invocation_short_name, needed, visible, visible == 1 ? "" : "s",
            gpu_advice(needed).c_str());
    return no_gpu_exit_code;
  }
  const int world = world_size > 0 ? world_size : visible;
  const int gpus = std::min(world, visible);

  // The bootstrap root that this starts serves the ranks' ncclCommInitRank;
  // it lives in this process, which waits for every rank below.
  ncclUniqueId id;
  if (!TOOLS_NCCL_OK(ncclGetUniqueId(&id))) return 1;
  const std::string id_hex = to_hex(&id, sizeof(id));

  // The ranks' shared host memory (HostCollectives): an anonymous file the
  // children inherit (no close-on-exec), freed when the last one closes it.
  const int shm_fd = memfd_create("arnorm-launch", 0);
  if (shm_fd < 0 || ftruncate(shm_fd, static_cast<off_t>(host_collectives_bytes(world))) != 0) {
    TOOLS_ERROR("shared memory for %d ranks: %s", world, strerror(errno));
    if (shm_fd >= 0) close(shm_fd);
    return 1;
  }

  fflush(stdout);
  fflush(stderr);
  std::vector<Child> children;
  for (int r = 0; r < world; ++r) {
    pid_t pid = -1;
    if (spawn_rank(argv, rank_environment(r, world, gpus, shm_fd, wrapper_requested(), id_hex), &pid) != 0) {
      kill_running(children);
      wait_ranks(children, 0.0);
      close(shm_fd);
      return 1;
    }
    children.push_back(Child{pid, true});
  }
  const int rc = wait_ranks(children, options.timeout_seconds);
  close(shm_fd);
  return rc;
}

}  // namespace arnorm_tools
