// Communicator creation. Every step ends in an all-gather of each rank's
// status (`agree`), so all ranks learn of a failure anywhere and return an
// error together instead of some ranks waiting forever in the next step.
// Every decision (peer access, CTA limit, NCCL use) is computed from the
// gathered data, which is the same on every rank, so all ranks decide alike.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/nccl_calls.h"
#include "core/env_knobs.h"
#include "core/status.h"
#include "device/launch.h"

namespace arnorm {
namespace {

constexpr int kMaxWorld = 1024;

struct Hello {
  int32_t status;
  int32_t version;
  int32_t rank;
  int32_t world;
  int32_t device;
  int32_t sm_count;
  int32_t forced;
  int32_t forced_protocol;
  int32_t fused_lag;  // ARNORM_FUSED_LAG: decides whether a fused call runs as one ring or in chunks
  uint64_t fused_ring_slots;  // ARNORM_FUSED_RING_SLOTS: writers and readers compute row slots alike
  uint64_t fused_pipeline_bytes;  // ARNORM_FUSED_PIPELINE_BYTES: which kernel, and data layout, a fused one-shot takes
  int32_t nccl_fallback;
  int32_t have_nccl;
  int32_t pid;
  uint64_t process_token;  // random, one per process: pids repeat across containers of one host
  int32_t allow_shared_gpu;  // ARNORM_ALLOW_SHARED_GPU: tests may put several ranks on one GPU
  uint64_t host_hash;
  uint64_t table_hash;
  uint64_t workspace_bytes;
  uint64_t timeout_ns;
  uint64_t nonce;
  unsigned char uuid[16];
};

struct StepStatus {
  int32_t status;
  char message[240];
};

class Collective {
 public:
  Collective(arnormBootstrap_t bs, int rank, int world) : bs_(bs), rank_(rank), world_(world) {}

  template <typename T>
  arnormStatus_t allgather(const T& mine, std::vector<T>* all, const char* step) {
    all->assign(world_, T{});
    if (bs_.allgather(&mine, all->data(), sizeof(T), bs_.user) != 0) {
      return ARNORM_FAIL(ARNORM_ERROR_BOOTSTRAP,
                         "arnormCommCreate: the bootstrap all-gather failed during '%s' on rank %d (ranks "
                         "whose all-gather did not fail may still be waiting in it for this one)",
                         step, rank_);
    }
    return ARNORM_SUCCESS;
  }

  // Every rank contributes its status of `step`; returns the local error if
  // this rank failed, else ARNORM_ERROR_REMOTE naming the first failed rank.
  // *first_failure (same on every rank) is the first failed rank's status.
  arnormStatus_t agree(const char* step, arnormStatus_t local, arnormStatus_t* first_failure = nullptr) {
    StepStatus mine{};
    mine.status = local;
    if (local != ARNORM_SUCCESS) std::snprintf(mine.message, sizeof(mine.message), "%s", last_error().c_str());
    const std::string saved = last_error();
    std::vector<StepStatus> all;
    ARNORM_TRY(allgather(mine, &all, step));
    if (first_failure) {
      *first_failure = ARNORM_SUCCESS;
      for (int r = world_ - 1; r >= 0; --r)
        if (all[r].status != ARNORM_SUCCESS) *first_failure = static_cast<arnormStatus_t>(all[r].status);
    }
    if (local != ARNORM_SUCCESS) return restore_last_error(local, saved);
    for (int r = 0; r < world_; ++r) {
      if (all[r].status != ARNORM_SUCCESS) {
        all[r].message[sizeof(all[r].message) - 1] = '\0';
        return ARNORM_FAIL(ARNORM_ERROR_REMOTE, "arnormCommCreate: rank %d failed during '%s' (%s): %s", r,
                           step, arnormGetErrorName(static_cast<arnormStatus_t>(all[r].status)),
                           all[r].message);
      }
    }
    return ARNORM_SUCCESS;
  }

 private:
  arnormBootstrap_t bs_;
  int rank_, world_;
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Same value for every process of one host (and boot).
uint64_t host_hash() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  std::string id = name;
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  if (boot >> boot_id) id += "/" + boot_id;
  return fnv1a(id);
}

// A recorded error message as a reason inside another sentence: without
// the "arnormCommCreate: " it starts with and the [file:line] tags.
std::string plain_message(const std::string& message) {
  static const std::regex tag(R"( \[[^\]\s]+:[0-9]+\])");
  std::string m = std::regex_replace(message, tag, "");
  const std::string prefix = "arnormCommCreate: ";
  if (m.compare(0, prefix.size(), prefix) == 0) m.erase(0, prefix.size());
  return m;
}

// *source: "built-in" or the file's path, for the log.
arnormStatus_t load_table(const arnormConfig_t& cfg, SelectionTable* table, std::string* source) {
  const char* path = cfg.tuning_file ? cfg.tuning_file : std::getenv("ARNORM_TUNING_FILE");
  if (path == nullptr || *path == '\0') {
    *table = SelectionTable::builtin();
    *source = "built-in";
    return ARNORM_SUCCESS;
  }
  *source = strprintf("'%s' over the built-in", path);
  std::ifstream f(path);
  if (!f) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "arnormCommCreate: cannot read tuning file '%s'", path);
  }
  std::stringstream text;
  text << f.rdbuf();
  std::string err;
  if (!SelectionTable::parse_json(text.str(), table, &err)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "arnormCommCreate: tuning file '%s': %s", path,
                       err.c_str());
  }
  return ARNORM_SUCCESS;
}

// Local checks and facts of this rank; fills *hello and the comm's settings.
// (rank and world size were checked by arnormCommCreate before any collective step.)
arnormStatus_t prepare_local(arnormComm* c, const arnormConfig_t& cfg, Hello* hello) {
  if (!(cfg.timeout_seconds >= 0) || !std::isfinite(cfg.timeout_seconds) || cfg.timeout_seconds > 86400) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "arnormCommCreate: timeout_seconds %g must be in [0, 86400] (0 = ARNORM_TIMEOUT_SECONDS, "
                       "else 5 s)",
                       cfg.timeout_seconds);
  }
  EnvKnobs knobs;
  ARNORM_TRY(read_env_knobs([](const char* name) { return std::getenv(name); }, "arnormCommCreate", &knobs));
  // ARNORM_TIMEOUT_SECONDS: the timeout where the config leaves it 0, for
  // operators who cannot change the code (ranks that load or compile
  // unevenly drift apart by more than the default). Agreed like the config's.
  if (cfg.timeout_seconds == 0 && knobs.timeout_seconds > 0) c->timeout_seconds = knobs.timeout_seconds;
  c->forced = knobs.forced;
  c->forced_protocol = knobs.forced_protocol;
  c->fused_lag = knobs.fused_lag;
  c->fused_ahead = knobs.fused_ahead;
  c->fused_pairs = knobs.fused_pairs;
  c->fused_wide = knobs.fused_wide;
  c->fused_ring_slots = knobs.fused_ring_slots;
  c->fused_ring_publish = knobs.fused_ring_publish;
  c->fused_pipeline_bytes = knobs.fused_pipeline_bytes;
  c->pdl = knobs.pdl;
  c->log_level = knobs.log_level;
  hello->allow_shared_gpu = knobs.allow_shared_gpu;
  int count = 0;
  ARNORM_CUDA_TRY(cudaGetDeviceCount(&count));
  if (c->device < 0 || c->device >= count) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "arnormCommCreate: device %d does not exist (%d visible)",
                       c->device, count);
  }
  ARNORM_CUDA_TRY(cudaSetDevice(c->device));
  cudaDeviceProp prop{};
  ARNORM_CUDA_TRY(cudaGetDeviceProperties(&prop, c->device));
  ARNORM_TRY(check_kernels_loadable(c->device, prop.major, prop.minor));
  ARNORM_TRY(load_table(cfg, &c->table, &c->table_source));
  hello->sm_count = prop.multiProcessorCount;
  std::memcpy(hello->uuid, prop.uuid.bytes, sizeof(hello->uuid));
  return ARNORM_SUCCESS;
}

// Checks that the gathered hellos describe one consistent group.
arnormStatus_t check_consistent(const std::vector<Hello>& all, int world) {
  const Hello& a = all[0];
  for (int r = 0; r < world; ++r) {
    const Hello& h = all[r];
    auto differ = [&](const char* what) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "arnormCommCreate: rank %d and rank 0 disagree on %s; every rank must use the "
                         "same library version, configuration, ARNORM_ALGO, ARNORM_PROTOCOL and tuning table",
                         r, what);
    };
    if (h.rank != r || h.world != world) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "arnormCommCreate: the bootstrap slot %d holds rank %d of world %d (expected rank "
                         "%d of world %d); check the ranks passed and the all-gather callback",
                         r, h.rank, h.world, r, world);
    }
    if (h.version != a.version) return differ("the arnorm version");
    if (h.workspace_bytes != a.workspace_bytes) return differ("workspace_bytes");
    if (h.timeout_ns != a.timeout_ns) return differ("timeout_seconds (the config's, or ARNORM_TIMEOUT_SECONDS)");
    if (h.table_hash != a.table_hash) return differ("the selection table");
    if (h.forced != a.forced) return differ("ARNORM_ALGO");
    if (h.forced_protocol != a.forced_protocol) return differ("ARNORM_PROTOCOL");
    if (h.fused_lag != a.fused_lag) return differ("ARNORM_FUSED_LAG");
    if (h.fused_ring_slots != a.fused_ring_slots) return differ("ARNORM_FUSED_RING_SLOTS");
    if (h.fused_pipeline_bytes != a.fused_pipeline_bytes) return differ("ARNORM_FUSED_PIPELINE_BYTES");
    if (h.nccl_fallback != a.nccl_fallback) return differ("nccl_fallback");
    if (h.have_nccl != a.have_nccl) return differ("whether an NCCL comm was given");
    if (h.allow_shared_gpu != a.allow_shared_gpu) return differ("ARNORM_ALLOW_SHARED_GPU");
    for (int q = 0; q < r; ++q) {
      if (all[q].host_hash != h.host_hash || std::memcmp(all[q].uuid, h.uuid, sizeof(h.uuid)) != 0) continue;
      // Ranks on one GPU are a test set-up only (SHARED GPU, below).
      if (!a.allow_shared_gpu) {
        return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                           "arnormCommCreate: ranks %d and %d use the same GPU; give each rank its own", q, r);
      }
    }
  }
  return ARNORM_SUCCESS;
}

// The most ranks of one process on one GPU (1 when every rank has its own
// GPU or process). Ranks of different processes on one GPU take turns and
// need no share of it.
int ranks_per_gpu(const std::vector<Hello>& all) {
  int most = 1;
  for (size_t r = 0; r < all.size(); ++r) {
    int same = 0;
    for (const Hello& h : all)
      same += h.host_hash == all[r].host_hash && h.process_token == all[r].process_token &&
              std::memcmp(h.uuid, all[r].uuid, sizeof(h.uuid)) == 0;
    most = std::max(most, same);
  }
  return most;
}

uint64_t probe_token(uint64_t nonce, int rank) { return (nonce ^ 0x9e3779b97f4a7c15ull) + 1 + rank; }
uint64_t identity_of(uint64_t nonce, int rank) { return (nonce * 31 + 7) ^ (static_cast<uint64_t>(rank) << 56); }

// Allocates the workspace and the error record; returns this rank's IPC handle.
arnormStatus_t allocate_local(arnormComm* c, uint64_t nonce, cudaIpcMemHandle_t* handle) {
  cudaError_t e = cudaMalloc(&c->workspace, c->layout.total_bytes);
  if (e != cudaSuccess) {
    c->workspace = nullptr;
    return ARNORM_FAIL(e == cudaErrorMemoryAllocation ? ARNORM_ERROR_OUT_OF_MEMORY : ARNORM_ERROR_CUDA,
                       "arnormCommCreate: cudaMalloc of the %zu-byte workspace failed: %s; lower "
                       "workspace_bytes or free device memory",
                       c->layout.total_bytes, cudaGetErrorString(e));
  }
  // Every byte is in place before this rank reports success, since peers
  // read and write the workspace as soon as the next step: cudaMemset is
  // asynchronous, and a cudaMemcpy from pageable memory may return before
  // its copy lands (seen: ranks sharing one GPU, whose probe then read a
  // wrong identity in 3 of 8 full test runs). So the writes go on a stream
  // of their own, which is synchronised.
  const uint64_t identity = identity_of(nonce, c->rank);
  const cudaError_t w = on_private_stream([&](cudaStream_t stream) {
    cudaError_t e = cudaMemsetAsync(c->workspace, 0, c->layout.total_bytes, stream);
    // The data regions start clean: all-ones, the sentinel (device/sentinel.cuh).
    if (e == cudaSuccess)
      e = cudaMemsetAsync(c->workspace + c->layout.data_offset, kSentinelByte, 2 * c->layout.data_bytes_per_parity,
                          stream);
    if (e == cudaSuccess)
      e = cudaMemcpyAsync(c->workspace + c->layout.control_offset + offsetof(ControlBlock, identity), &identity,
                          sizeof(identity), cudaMemcpyHostToDevice, stream);
    return e;
  });
  if (w != cudaSuccess) {
    return ARNORM_FAIL(ARNORM_ERROR_CUDA, "arnormCommCreate: initialising the workspace failed: %s (%s)",
                       cudaGetErrorString(w), cudaGetErrorName(w));
  }
  ARNORM_CUDA_TRY(cudaIpcGetMemHandle(handle, c->workspace));
  c->peer_workspace[c->rank] = c->workspace;
  return ARNORM_SUCCESS;
}

// What a rank tells its peers about its workspace: the IPC handle for ranks
// in other processes, the address for ranks in its own (a process cannot
// open its own IPC handles, and needs none: one address space).
struct WorkspaceExport {
  cudaIpcMemHandle_t handle;
  uint64_t address;
};

bool in_my_process(const Hello& me, const Hello& peer) {
  return peer.host_hash == me.host_hash && peer.process_token == me.process_token;
}

// Drawn once per process: ranks of one process share it, ranks of other
// processes (even with the same pid in another container) do not.
uint64_t process_token() {
  static const uint64_t token = [] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(getpid());
  }();
  return token;
}

arnormStatus_t map_peers(arnormComm* c, const std::vector<WorkspaceExport>& exports, const std::vector<Hello>& all) {
  const Hello& me = all[c->rank];
  for (int q = 0; q < c->world_size; ++q) {
    if (q == c->rank) continue;
    if (in_my_process(me, all[q])) {
      c->peer_in_process[q] = true;
      c->peer_workspace[q] = reinterpret_cast<char*>(exports[q].address);
      if (all[q].device == c->device) continue;  // SHARED GPU: its own memory
      int can = 0;
      ARNORM_CUDA_TRY(cudaDeviceCanAccessPeer(&can, c->device, all[q].device));
      if (!can) {
        return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                           "device %d (rank %d) cannot access device %d (rank %d) directly (no P2P path "
                           "between the GPUs?)",
                           c->device, c->rank, all[q].device, q);
      }
      // Process-wide and left on at teardown: other code of the process may
      // rely on it, and enabling it twice is harmless.
      const cudaError_t e = cudaDeviceEnablePeerAccess(all[q].device, 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) {
        cudaGetLastError();
      } else if (e != cudaSuccess) {
        return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                           "cudaDeviceEnablePeerAccess from device %d (rank %d) to device %d (rank %d) failed: %s",
                           c->device, c->rank, all[q].device, q, cudaGetErrorString(e));
      }
      continue;
    }
    void* p = nullptr;
    cudaError_t e = cudaIpcOpenMemHandle(&p, exports[q].handle, cudaIpcMemLazyEnablePeerAccess);
    if (e != cudaSuccess) {
      return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                         "cudaIpcOpenMemHandle of rank %d's workspace failed on rank %d: %s (no P2P path "
                         "between the GPUs?)",
                         q, c->rank, cudaGetErrorString(e));
    }
    c->peer_workspace[q] = static_cast<char*>(p);
  }
  return ARNORM_SUCCESS;
}

void unmap_peers(arnormComm* c) {
  close_peer_mappings(c);
  c->peer_workspace[c->rank] = nullptr;
  if (c->workspace) cudaFree(c->workspace);
  c->workspace = nullptr;
  cudaGetLastError();
}

// Stores a token into every peer and loads every peer's identity, on a
// private stream with a bounded wait: a store or load that never completes
// is reported, not waited on forever.
arnormStatus_t run_probe(arnormComm* c, uint64_t nonce, uint64_t* identities_host) {
  cudaStream_t stream = nullptr;
  uint64_t* identities = nullptr;
  ARNORM_CUDA_TRY(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  arnormStatus_t st = ARNORM_SUCCESS;
  if (cudaMalloc(&identities, kMaxRanks * sizeof(uint64_t)) != cudaSuccess) {
    st = ARNORM_FAIL(ARNORM_ERROR_CUDA, "arnormCommCreate: cudaMalloc of the probe buffer failed");
  } else {
    st = launch_probe(c->sync_params(kOpNone), probe_token(nonce, c->rank), identities, stream);
  }
  if (st == ARNORM_SUCCESS) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(c->timeout_seconds);
    cudaError_t q;
    while ((q = cudaStreamQuery(stream)) == cudaErrorNotReady) {
      if (std::chrono::steady_clock::now() > deadline) {
        // The kernel is stuck on a peer access: freeing memory would wait for
        // it forever, so teardown leaves this communicator's memory alone.
        c->probe_stuck = true;
        return ARNORM_FAIL(ARNORM_ERROR_PEER_TIMEOUT,
                           "arnormCommCreate: the peer-access probe on rank %d did not finish in %.1f s; "
                           "the GPUs cannot reach each other's memory",
                           c->rank, c->timeout_seconds);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (q != cudaSuccess) {
      st = ARNORM_FAIL(ARNORM_ERROR_CUDA, "arnormCommCreate: the peer-access probe failed: %s",
                       cudaGetErrorString(q));
    } else if (cudaMemcpyAsync(identities_host, identities, kMaxRanks * sizeof(uint64_t), cudaMemcpyDeviceToHost,
                               stream) != cudaSuccess ||
               cudaStreamSynchronize(stream) != cudaSuccess) {
      st = ARNORM_FAIL(ARNORM_ERROR_CUDA, "arnormCommCreate: reading the probe result failed");
    }
  }
  if (identities) cudaFree(identities);
  cudaStreamDestroy(stream);
  return st;
}

// ARNORM_TEST_FAULT=<step>:<rank> makes that rank fail at that step of
// creation, for the tests of what every other rank then gets.
bool fault_injected(const char* step, int rank) {
  const char* v = std::getenv("ARNORM_TEST_FAULT");
  if (v == nullptr) return false;
  const char* colon = std::strrchr(v, ':');
  return colon != nullptr && std::string(v, colon) == step && std::atoi(colon + 1) == rank;
}

// After every rank's probe has finished: did every peer's store land here,
// and did our loads see every peer's identity?
arnormStatus_t verify_probe(arnormComm* c, uint64_t nonce, const uint64_t* identities) {
  if (fault_injected("verify peer access", c->rank)) {
    return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED, "rank %d cannot reach its peers: failure injected (ARNORM_TEST_FAULT)",
                       c->rank);
  }
  ProbeBlock probe{};
  ARNORM_CUDA_TRY(copy_to_host_privately(&probe, c->workspace + c->layout.probe_offset, sizeof(probe)));
  for (int q = 0; q < c->world_size; ++q) {
    if (probe.token[q] != probe_token(nonce, q)) {
      return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                         "stores from rank %d did not reach rank %d's memory (probe: 0x%016llx, expected "
                         "0x%016llx)",
                         q, c->rank, static_cast<unsigned long long>(probe.token[q]),
                         static_cast<unsigned long long>(probe_token(nonce, q)));
    }
    if (identities[q] != identity_of(nonce, q)) {
      return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                         "loads from rank %d's memory on rank %d returned wrong data (probe: 0x%016llx, "
                         "expected 0x%016llx)",
                         q, c->rank, static_cast<unsigned long long>(identities[q]),
                         static_cast<unsigned long long>(identity_of(nonce, q)));
    }
  }
  return ARNORM_SUCCESS;
}

arnormStatus_t create_own_nccl(arnormComm* c, Collective& coll) {
  ncclUniqueId id{};
  arnormStatus_t st = ARNORM_SUCCESS;
  if (c->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) {
    st = ARNORM_FAIL(ARNORM_ERROR_NCCL, "arnormCommCreate: ncclGetUniqueId failed");
  }
  ARNORM_TRY(coll.agree("NCCL unique id", st));
  std::vector<ncclUniqueId> ids;
  ARNORM_TRY(coll.allgather(id, &ids, "NCCL unique id exchange"));
  // Blocking (NCCL's default), unless NCCL_COMM_BLOCKING=0 makes it
  // nonblocking: settled here either way.
  ncclResult_t r = ncclCommInitRank(&c->nccl, c->world_size, ids[0], c->rank);
  if (c->nccl != nullptr) r = nccl_settle(c->nccl, r);
  if (r != ncclSuccess) {
    if (c->nccl != nullptr) ncclCommAbort(c->nccl);
    c->nccl = nullptr;
    st = ARNORM_FAIL(ARNORM_ERROR_NCCL, "arnormCommCreate: ncclCommInitRank failed: %s", ncclGetErrorString(r));
  } else {
    c->owns_nccl = true;
  }
  return coll.agree("NCCL comm init", st);
}

// The rank's own resources, after the last collective step. Its failure is
// agreed like any other ('finish'): a rank that returned early would leave
// its peers waiting in the bootstrap for it.
arnormStatus_t finish_local(arnormComm* c) {
  if (fault_injected("finish", c->rank)) {
    return ARNORM_FAIL(ARNORM_ERROR_INTERNAL, "arnormCommCreate: failure injected at 'finish' (ARNORM_TEST_FAULT)");
  }
  void* mapped_host = nullptr;
  ARNORM_CUDA_TRY(cudaHostAlloc(&mapped_host, sizeof(ErrorRecord), cudaHostAllocMapped));
  c->error_host = static_cast<ErrorRecord*>(mapped_host);
  std::memset(c->error_host, 0, sizeof(ErrorRecord));
  void* dev_alias = nullptr;
  ARNORM_CUDA_TRY(cudaHostGetDevicePointer(&dev_alias, mapped_host, 0));
  c->error_device = static_cast<ErrorRecord*>(dev_alias);
#if ARNORM_PHASE_TIMING
  {
    // Kept by the communicator only once cleared: destroy reads it.
    void* marks = nullptr;
    const size_t bytes = kPhaseClockWords * sizeof(unsigned long long);
    ARNORM_CUDA_TRY(cudaMalloc(&marks, bytes));
    const cudaError_t e = on_private_stream([&](cudaStream_t s) { return cudaMemsetAsync(marks, 0, bytes, s); });
    if (e != cudaSuccess) {
      cudaFree(marks);
      return ARNORM_FAIL(ARNORM_ERROR_CUDA, "arnormCommCreate: clearing the phase clock's buffer failed: %s",
                         cudaGetErrorString(e));
    }
    c->phase_clock = static_cast<unsigned long long*>(marks);
  }
#endif
  ARNORM_CUDA_TRY(cudaEventCreateWithFlags(&c->order_event, cudaEventDisableTiming));
  return ARNORM_SUCCESS;
}

// config_status: a failure of the caller's config, reported in "local checks".
arnormStatus_t create(arnormComm* c, arnormBootstrap_t bs, const arnormConfig_t& cfg, arnormStatus_t config_status) {
  Collective coll(bs, c->rank, c->world_size);
  c->timeout_seconds = cfg.timeout_seconds > 0 ? cfg.timeout_seconds : 5.0;
  c->nccl = static_cast<ncclComm_t>(cfg.nccl_comm);
  const size_t budget = cfg.workspace_bytes ? cfg.workspace_bytes : kDefaultWorkspaceBytes;

  Hello mine{};
  mine.version = kVersionCode;
  mine.rank = c->rank;
  mine.world = c->world_size;
  mine.device = c->device;
  mine.status = config_status != ARNORM_SUCCESS ? config_status : prepare_local(c, cfg, &mine);
  const std::string local_error = last_error();
  mine.forced = c->forced;
  mine.forced_protocol = static_cast<int32_t>(c->forced_protocol);
  mine.fused_lag = c->fused_lag;
  mine.fused_ring_slots = c->fused_ring_slots;
  mine.fused_pipeline_bytes = c->fused_pipeline_bytes;
  mine.nccl_fallback = cfg.nccl_fallback ? 1 : 0;
  mine.have_nccl = c->nccl ? 1 : 0;
  mine.pid = static_cast<int32_t>(getpid());
  mine.process_token = process_token();
  mine.host_hash = host_hash();
  mine.table_hash = c->table.hash();
  mine.workspace_bytes = budget;
  mine.timeout_ns = static_cast<uint64_t>(c->timeout_seconds * 1e9);
  mine.nonce = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
               (static_cast<uint64_t>(mine.pid) << 40);
  if (mine.status != ARNORM_SUCCESS) restore_last_error(static_cast<arnormStatus_t>(mine.status), local_error);
  ARNORM_TRY(coll.agree("local checks", static_cast<arnormStatus_t>(mine.status)));

  std::vector<Hello> all;
  ARNORM_TRY(coll.allgather(mine, &all, "hello"));
  ARNORM_TRY(check_consistent(all, c->world_size));  // same data on every rank: same verdict
  const uint64_t nonce = all[0].nonce;
  bool same_host = true;
  int min_sms = all[0].sm_count;
  for (const Hello& h : all) {
    same_host = same_host && h.host_hash == all[0].host_hash;
    min_sms = std::min(min_sms, h.sm_count);
  }
  // Two CTAs per multiprocessor (the kernels are built for two resident).
  c->max_blocks = std::max(1, std::min(2 * min_sms, kMaxBlocks));
  // SHARED GPU (tests only, ARNORM_ALLOW_SHARED_GPU): ranks of one process on
  // one GPU run at the same instant, and a rank's CTAs may wait for a peer's
  // kernel that can only start on multiprocessors they leave free. So with k
  // such ranks on a GPU every kernel runs at most min_sms / k CTAs (each fits
  // one multiprocessor; the fused two-shot takes a whole one), the cluster
  // and wide launches take 1/k of what fits (launch_fused.cu), and PDL is off
  // (a next kernel's waiting CTAs would hold multiprocessors beyond the
  // share). Ranks in separate processes take turns instead (time slices;
  // not under MPS, which runs them at once and is not supported here): k
  // counts only ranks of one process. Same values on every rank.
  const int sharing = ranks_per_gpu(all);
  if (sharing > 1) {
    c->max_blocks = std::max(1, min_sms / sharing);
    c->gpu_share = sharing;
    c->pdl = false;
  }
  c->peer_access = same_host && c->world_size <= kMaxRanks;
  std::string why_no_peer_memory;

  if (c->peer_access) {
    arnormStatus_t st = ARNORM_SUCCESS;
    if (!compute_workspace_layout(c->world_size, c->max_blocks, budget, &c->layout)) {
      st = ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                       "arnormCommCreate: workspace_bytes %zu is too small for world size %d (need at least "
                       "%zu bytes)",
                       budget, c->world_size, min_workspace_bytes(c->world_size, c->max_blocks));
    }
    WorkspaceExport mine_export{};
    if (st == ARNORM_SUCCESS) st = allocate_local(c, nonce, &mine_export.handle);
    mine_export.address = reinterpret_cast<uint64_t>(c->workspace);
    ARNORM_TRY(coll.agree("allocate workspace", st));
    std::vector<WorkspaceExport> exports;
    ARNORM_TRY(coll.allgather(mine_export, &exports, "exchange workspace handles"));
    // A missing peer path (UNSUPPORTED on the first failing rank, a value all
    // ranks share) sends every rank to NCCL together; other failures are errors.
    arnormStatus_t first_failure = ARNORM_SUCCESS;
    arnormStatus_t mapped = coll.agree("map peer workspaces", map_peers(c, exports, all), &first_failure);
    uint64_t identities[kMaxRanks] = {};
    if (mapped == ARNORM_SUCCESS) {
      ARNORM_TRY(coll.agree("peer-access probe", run_probe(c, nonce, identities)));
      mapped = coll.agree("verify peer access", verify_probe(c, nonce, identities), &first_failure);
    }
    if (mapped != ARNORM_SUCCESS) {
      if (first_failure != ARNORM_ERROR_UNSUPPORTED || !cfg.nccl_fallback) return mapped;
      why_no_peer_memory = plain_message(last_error());  // this rank's view of the failed step
      unmap_peers(c);
      c->peer_access = false;
    }
  } else {
    why_no_peer_memory = same_host ? strprintf("world size %d is above %d", c->world_size, kMaxRanks)
                                   : std::string("the ranks are on more than one host");
  }
  // NCCL is needed without peer memory, and when ARNORM_ALGO forces it
  // (the same on every rank, checked above).
  if ((!c->peer_access || c->forced == ARNORM_ALGO_NCCL) && c->nccl == nullptr) {
    if (!cfg.nccl_fallback) {
      if (c->peer_access) {
        return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                           "arnormCommCreate: ARNORM_ALGO=nccl needs an NCCL comm; pass one in "
                           "arnormConfig_t.nccl_comm or set nccl_fallback = 1");
      }
      return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                         "arnormCommCreate: peer memory is unavailable (GPUs on %s) and nccl_fallback is 0",
                         same_host ? "one host without P2P, or more than 8 ranks" : "more than one host");
    }
    ARNORM_TRY(create_own_nccl(c, coll));
  }

  ARNORM_TRY(coll.agree("finish", finish_local(c)));
  if (!c->peer_access) c->fallback_reason = why_no_peer_memory;
  // LOG (core/log.h). The fallback is agreed, so rank 0 alone says it.
  if (!c->peer_access && c->rank == 0) {
    log_line(c->log_level, LogLevel::kWarn,
             "arnormCommCreate: %d ranks without peer memory (%s); every call of this communicator runs on "
             "NCCL: slower, and without arnorm's bitwise and batch-invariance promises. nccl_fallback = 0 "
             "makes this an error; ARNORM_DEBUG=NONE silences this line",
             c->world_size, why_no_peer_memory.c_str());
  }
  log_line(c->log_level, LogLevel::kInfo,
           "arnormCommCreate: rank %d of %d on device %d: %s, workspace %zu bytes, up to %d CTAs a kernel, "
           "timeout %g s, table %s, ARNORM_ALGO %s, %s%s",
           c->rank, c->world_size, c->device, c->peer_access ? "peer memory" : "NCCL only",
           c->peer_access ? c->layout.total_bytes : size_t{0}, c->max_blocks, c->timeout_seconds,
           c->table_source.c_str(), arnormAlgorithmName(c->forced), c->nccl ? "with NCCL" : "no NCCL comm",
           c->gpu_share > 1 ? strprintf(", %d ranks share this GPU", c->gpu_share).c_str() : "");
  return ARNORM_SUCCESS;
}

}  // namespace
}  // namespace arnorm

extern "C" arnormStatus_t arnormCommCreate(arnormComm_t* comm, int rank, int world_size, int device,
                                           arnormBootstrap_t bootstrap, const arnormConfig_t* config) {
  return arnorm::guarded("arnormCommCreate", [&]() -> arnormStatus_t {
    using namespace arnorm;
    clear_last_error();
    if (comm != nullptr) *comm = nullptr;
    if (bootstrap.allgather == nullptr) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "arnormCommCreate: bootstrap.allgather is NULL; pass an all-gather callback or use "
                         "arnormCommCreateFromNccl");
    }
    arnormConfig_t cfg = ARNORM_CONFIG_INIT;
    // A NULL comm or a bad config fails this rank in the first agreed step,
    // not here: the other ranks are about to call the bootstrap and would
    // wait in it forever.
    arnormStatus_t config_status = ARNORM_SUCCESS;
    if (comm == nullptr) {
      config_status = ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                                  "arnormCommCreate: comm is NULL (pass the address of an arnormComm_t)");
    } else if (config != nullptr) {
      if (config->struct_size < offsetof(arnormConfig_t, timeout_seconds) || config->struct_size > (1u << 16)) {
        config_status = ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                                    "arnormCommCreate: config->struct_size %zu is not a valid sizeof(arnormConfig_t); "
                                    "start from ARNORM_CONFIG_INIT",
                                    config->struct_size);
      } else {
        std::memcpy(&cfg, config, std::min(sizeof(cfg), config->struct_size));
      }
    }
    // Without a valid world size the bootstrap cannot even be called (its
    // buffers are sized by it): fail here, before any collective step.
    if (world_size < 1 || world_size > kMaxWorld || rank < 0 || rank >= world_size) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "arnormCommCreate: rank %d / world_size %d: need 1 <= world_size <= %d and 0 <= rank < "
                         "world_size (no collective step was started; the other ranks will wait in the bootstrap)",
                         rank, world_size, kMaxWorld);
    }
    auto* c = new arnormComm();
    c->rank = rank;
    c->world_size = world_size;
    c->device = device;
    DeviceGuard guard(device >= 0 ? device : 0);
    const RelaxedCaptureMode relaxed;  // CAPTURE-SAFE SET-UP
    const arnormStatus_t st = create(c, bootstrap, cfg, config_status);
    if (st != ARNORM_SUCCESS) {
      const std::string msg = last_error();
      c->owns_nccl = c->owns_nccl && c->nccl;  // destroy what this rank made
      arnormCommDestroy(c);                    // leaves memory alone if the probe is stuck
      return restore_last_error(st, msg);
    }
    *comm = c;  // not NULL: a NULL comm failed the first agreed step
    return ARNORM_SUCCESS;
  });
}
