#include "report.h"

#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <vector>

#include "common/check.h"
#include "timing.h"

extern char** environ;

namespace arnorm_bench {
namespace {

// One rank's identity, all-gathered as raw bytes (NUL-terminated strings).
struct DeviceRecord {
  char name[256];
  char pci_bus_id[32];
  char hostname[64];
  int32_t pid;
  int32_t device;
};

std::string utc_now() {
  char buf[32];
  const time_t now = time(nullptr);
  tm t;
  gmtime_r(&now, &t);
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

}  // namespace

int gather_run_info(const Rank& rank, RunInfo* info) {
  DeviceRecord mine;
  memset(&mine, 0, sizeof(mine));
  cudaDeviceProp prop;
  TOOLS_CUDA_TRY(cudaGetDeviceProperties(&prop, rank.ctx.device));
  snprintf(mine.name, sizeof(mine.name), "%s", prop.name);
  TOOLS_CUDA_TRY(cudaDeviceGetPCIBusId(mine.pci_bus_id, sizeof(mine.pci_bus_id), rank.ctx.device));
  if (gethostname(mine.hostname, sizeof(mine.hostname) - 1) != 0) strcpy(mine.hostname, "?");
  mine.pid = static_cast<int32_t>(getpid());
  mine.device = rank.ctx.device;

  const size_t world = static_cast<size_t>(rank.ctx.world_size);
  std::vector<DeviceRecord> all(world);
  if (rank.host->allgather(&mine, all.data(), sizeof(mine)) != 0) return 1;
  info->world_size = rank.ctx.world_size;
  for (DeviceRecord& r : all) {
    r.name[sizeof(r.name) - 1] = r.pci_bus_id[sizeof(r.pci_bus_id) - 1] = '\0';
    r.hostname[sizeof(r.hostname) - 1] = '\0';
    info->device_names.emplace_back(r.name);
    info->pci_bus_ids.emplace_back(r.pci_bus_id);
    info->hostnames.emplace_back(r.hostname);
    info->pids.push_back(r.pid);
  }

  int nccl = 0;
  TOOLS_NCCL_TRY(ncclGetVersion(&nccl));
  info->nccl_version = std::to_string(nccl / 10000) + "." + std::to_string(nccl % 10000 / 100) +
                       "." + std::to_string(nccl % 100);
  // The library that runs, and the headers this binary was built against:
  // a stale libarnorm on the loader's path shows as a difference.
  // (Looked up, not linked: the A/B runs load libraries older than 0.10,
  // which lack it.)
  using GetVersion = arnormStatus_t (*)(int*);
  const auto get_version = reinterpret_cast<GetVersion>(dlsym(RTLD_DEFAULT, "arnormGetVersion"));
  int loaded = 0;
  if (get_version == nullptr) {
    info->arnorm_version = "older than 0.10";
  } else if (get_version(&loaded) != ARNORM_SUCCESS) {
    TOOLS_ERROR("arnormGetVersion: %s", arnormGetLastErrorString());
    return 1;
  } else {
    info->arnorm_version = std::to_string(loaded / 10000) + "." + std::to_string(loaded % 10000 / 100) + "." +
                           std::to_string(loaded % 100);
  }
  info->arnorm_header_version = std::to_string(ARNORM_VERSION_MAJOR) + "." +
                                std::to_string(ARNORM_VERSION_MINOR) + "." +
                                std::to_string(ARNORM_VERSION_PATCH);
  // What decides how the libraries run (ARNORM_ALGO, NCCL_PROTO, ...), so a
  // result file says what produced it.
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    const std::string name = kv.substr(0, eq);
    // (ARNORM_LAUNCH_*: the launcher's own hand-over to its ranks.)
    if ((name.rfind("ARNORM_", 0) == 0 && name.rfind("ARNORM_LAUNCH_", 0) != 0) || name.rfind("NCCL_", 0) == 0)
      info->environment.emplace_back(name, kv.substr(eq + 1));
  }
  std::sort(info->environment.begin(), info->environment.end());
  info->date_utc = utc_now();

  arnormCommInfo_t comm_info;
  const arnormStatus_t st = arnormCommGetInfo(rank.comm, &comm_info);
  if (st != ARNORM_SUCCESS) {
    TOOLS_ERROR("arnormCommGetInfo: %s: %s", arnormGetErrorName(st), arnormGetLastErrorString());
    return 1;
  }
  info->workspace_bytes = comm_info.workspace_bytes;
  info->peer_access = comm_info.peer_access;
  info->max_blocks = comm_info.max_blocks;
  return 0;
}

// "1,2,4" for the --tokens and --hidden lists.
std::string join(const std::vector<size_t>& values) {
  std::string s;
  for (size_t v : values) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

void print_run_header(FILE* out, const Options& opt, const RunInfo& info) {
  fprintf(out,
          "# arnorm-bench: op %s, world %d, warmup iters: %d iters: %d %s: %d validation: %d\n",
          opt.op.c_str(), info.world_size, opt.warmup, opt.iters,
          opt.replays == 0 ? "eager rounds (no graph)" : "graph replays",
          opt.replays == 0 ? kEagerRounds : opt.replays, opt.check);
  if (opt.runs_allreduce()) {
    fprintf(out, "# allreduce: minBytes %zu maxBytes %zu step: %zu(factor)%s\n", opt.min_bytes,
            opt.max_bytes, opt.step_factor, opt.in_place ? " in place" : "");
  }
  if (opt.runs_fused()) {
    fprintf(out, "# fused: tokens %s hidden %s weight type %s epsilon %g\n",
            join(opt.tokens).c_str(), join(opt.hidden).c_str(),
            opt.weight_follows_dtype ? "(as -d)" : dtype_name(opt.weight_dtype), opt.epsilon);
  }
  fprintf(out, "# nccl %s, arnorm %s%s; workspace %g MiB per GPU, peer access %s, max blocks %d\n",
          info.nccl_version.c_str(), info.arnorm_version.c_str(),
          info.arnorm_version == info.arnorm_header_version
              ? ""
              : (" (BUILT AGAINST " + info.arnorm_header_version + ": a different libarnorm is loaded)").c_str(),
          static_cast<double>(info.workspace_bytes) / (1 << 20), info.peer_access ? "yes" : "NO",
          info.max_blocks);
  if (!info.environment.empty()) {
    fprintf(out, "# environment:");
    for (const auto& [name, value] : info.environment) fprintf(out, " %s=%s", name.c_str(), value.c_str());
    fprintf(out, "\n");
  }
  fprintf(out, "#\n# Using devices\n");
  for (int r = 0; r < info.world_size; ++r) {
    const size_t i = static_cast<size_t>(r);
    fprintf(out, "#  Rank %2d Pid %7d on %10s device %2d [%s] %s\n", r, info.pids[i],
            info.hostnames[i].c_str(), r, info.pci_bus_ids[i].c_str(),
            info.device_names[i].c_str());
  }
  fflush(out);
}

nlohmann::ordered_json environment_json(const Options& opt, const RunInfo& info) {
  using Json = nlohmann::ordered_json;
  Json devices = Json::array();
  for (int r = 0; r < info.world_size; ++r) {
    const size_t i = static_cast<size_t>(r);
    devices.push_back(Json{{"rank", r},
                           {"device", r},
                           {"name", info.device_names[i]},
                           {"pci_bus_id", info.pci_bus_ids[i]},
                           {"host", info.hostnames[i]},
                           {"pid", info.pids[i]}});
  }
  Json environment = Json::object();
  for (const auto& [name, value] : info.environment) environment[name] = value;
  Json dtypes = Json::array(), algos = Json::array(), fused_algos = Json::array();
  for (arnormDataType_t t : opt.dtypes) dtypes.push_back(dtype_name(t));
  for (Algo a : opt.algos) algos.push_back(algo_name(a));
  for (Algo a : opt.fused_algos) fused_algos.push_back(algo_name(a));
  Json options{{"op", opt.op},
               {"minbytes", opt.min_bytes},
               {"maxbytes", opt.max_bytes},
               {"stepfactor", opt.step_factor},
               {"iters", opt.iters},
               {"warmup_iters", opt.warmup},
               {"check", opt.check},
               {"cudagraph_replays", opt.replays},
               {"timing", opt.replays == 0 ? "eager" : "cudagraph"},
               {"eager_rounds", opt.replays == 0 ? kEagerRounds : 0},
               {"in_place", opt.in_place},
               {"datatypes", dtypes},
               {"algos", algos},
               {"fused_algos", fused_algos},
               {"tokens", opt.tokens},
               {"hidden", opt.hidden},
               {"weight_datatype",
                opt.weight_follows_dtype ? Json(nullptr) : Json(dtype_name(opt.weight_dtype))},
               {"epsilon", opt.epsilon},
               {"workspace_mib_requested", opt.workspace_mib},
               {"timeout_seconds", opt.timeout_seconds}};
  return Json{{"world", info.world_size},
              {"devices", devices},
              {"nccl_version", info.nccl_version},
              {"arnorm_version", info.arnorm_version},
              {"arnorm_header_version", info.arnorm_header_version},
              {"environment_variables", environment},
              {"date", info.date_utc},
              {"argv", opt.argv},
              {"options", options},
              {"communicator", Json{{"workspace_bytes", info.workspace_bytes},
                                    {"peer_access", info.peer_access != 0},
                                    {"max_blocks", info.max_blocks}}}};
}

int write_results_json(const std::string& path, const nlohmann::ordered_json& environment,
                       const nlohmann::ordered_json& rows) {
  const nlohmann::ordered_json doc{{"environment", environment}, {"results", rows}};
  std::ofstream out(path, std::ios::trunc);
  // (replace: an environment value that is not UTF-8 must not cost the results)
  out << doc.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
  if (!out.flush()) {
    TOOLS_ERROR("-J: cannot write %s", path.c_str());
    return 1;
  }
  return 0;
}

void print_totals(FILE* out, const char* wrong_label, const char* failed_label, const SweepTotals& t) {
  fprintf(out, "# %s: %llu %s\n", wrong_label, static_cast<unsigned long long>(t.wrong), t.wrong == 0 ? "OK" : "FAILED");
  fprintf(out, "# %s: %llu %s\n", failed_label, static_cast<unsigned long long>(t.failed),
          t.failed == 0 ? "OK" : "FAILED");
}

void add_outcome_fields(nlohmann::ordered_json* row, const AlgoOutcome& a, const std::string& auto_algo) {
  (*row)["wrong"] = a.wrong;
  (*row)["failed"] = a.failed;
  (*row)["auto_algo"] = auto_algo.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(auto_algo);
}

int column_of(const std::vector<Algo>& columns, Algo algo) {
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == algo) return static_cast<int>(i);
  return -1;
}

std::string centered(const std::string& text, int width) {
  const int pad = width - static_cast<int>(text.size());
  if (pad <= 0) return text;
  return std::string(static_cast<size_t>(pad - pad / 2), ' ') + text +
         std::string(static_cast<size_t>(pad / 2), ' ');
}

}  // namespace arnorm_bench
