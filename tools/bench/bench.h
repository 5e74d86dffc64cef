// Types shared by the sweeps of arnorm-bench: the parsed command line, the
// per-rank handles every sweep needs, and the names the output uses.
#ifndef ARNORM_TOOLS_BENCH_BENCH_H
#define ARNORM_TOOLS_BENCH_BENCH_H

#include <nccl.h>
#include <stddef.h>
#include <stdint.h>

#include <string>
#include <utility>
#include <vector>

#include "arnorm/arnorm.h"
#include "common/launcher.h"

namespace arnorm_bench {

// The result columns of the sweeps. Each is timed separately; the nccl
// column is raw ncclAllReduce on the same communicator, not arnorm's NCCL
// route. kNcclNorm (fused sweep only) is arnorm's fused call with
// ARNORM_ALGO_NCCL: ncclAllReduce followed by arnorm's add&RMSNorm kernel.
enum class Algo { kOneshot, kTwoshot, kAuto, kNccl, kNcclNorm };

const char* algo_name(Algo algo);
bool parse_algo(const std::string& name, Algo* algo);
arnormAlgorithm_t to_arnorm(Algo algo);  // kNccl and kNcclNorm map to ARNORM_ALGO_NCCL

// One algorithm's result at one row of a sweep, reduced over all ranks
// (identical on every rank).
struct AlgoOutcome {
  double time_us = 0.0;  // the slowest rank's median per call
  uint64_t wrong = 0;    // summed over ranks; includes a recorded async error
  bool failed = false;   // a call, capture or replay failed on some rank
  bool ok() const { return !failed && wrong == 0; }
};

// The names the table prints: float, half, bf16. parse_dtype also takes
// nccl-tests' and arnorm's spellings (float32/fp32, float16/fp16,
// bfloat16), as -d and --weight-dtype do.
const char* dtype_name(arnormDataType_t dtype);
bool parse_dtype(const std::string& name, arnormDataType_t* dtype);

// Whether rank 0 will be able to write `path` at the end of the run (its
// folder exists and is writable, and so is the file if it exists); false
// after saying why, naming `flag`. Checked before the sweep, so a typo does
// not cost a whole run.
bool output_path_writable(const std::string& path, const char* flag);
size_t dtype_size(arnormDataType_t dtype);

struct Options {
  std::string op = "allreduce";  // allreduce, fused or all
  bool runs_allreduce() const { return op != "fused"; }
  bool runs_fused() const { return op != "allreduce"; }
  size_t min_bytes = 1024;
  size_t max_bytes = size_t(256) << 20;
  size_t step_factor = 2;
  int iters = 20;    // calls captured per CUDA graph
  int warmup = 5;    // eager calls before capture
  int check = 1;     // 1: verify results bitwise
  int replays = 15;  // timed graph replays; the median is reported. 0: eager timing (timing.h)
  std::vector<arnormDataType_t> dtypes;
  int ngpus = 0;            // 0: every visible GPU
  std::string json_file;    // empty: no JSON
  std::vector<Algo> algos;  // all-reduce columns
  bool in_place = false;    // all-reduce: recvbuf = sendbuf in every column, NCCL's too
  // Fused sweep: rows (tokens, hidden) for each of `dtypes`.
  std::vector<size_t> tokens = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};
  std::vector<size_t> hidden = {4096, 7168, 8192};
  bool weight_follows_dtype = true;                 // weight of the activations' type
  arnormDataType_t weight_dtype = ARNORM_BFLOAT16;  // when !weight_follows_dtype
  double epsilon = 1e-6;                            // passed as float
  std::vector<Algo> fused_algos;  // fused columns, in the order nccl, nccl+norm, oneshot, ...
  arnormDataType_t weight_type_for(arnormDataType_t dtype) const {
    return weight_follows_dtype ? dtype : weight_dtype;
  }
  size_t workspace_mib = 0;  // 0: the library default
  std::string tune_file;     // empty: no tuning table
  double timeout_seconds = 600.0;
  std::vector<std::string> argv;
};

// What one rank holds while it runs a sweep. Every member is borrowed.
struct Rank {
  arnorm_tools::RankContext ctx;
  ncclComm_t nccl;
  arnormComm_t comm;
  cudaStream_t stream;  // non-default; every enqueue of the sweep goes here
  arnorm_tools::HostCollectives* host;
  bool is_root() const { return ctx.rank == 0; }
};

// What one rank measured for one algorithm at one row; all-gathered as is.
struct LocalOutcome {
  double median_us;
  uint64_t wrong;
  int32_t failed;
  int32_t unused;
};

// Collective: one all-gather, whatever happened locally. *out: the slowest
// rank's time, wrong values summed, failed if any rank failed. Non-zero only
// when the all-gather failed (reported); the ranks are then out of step.
int reduce_over_ranks(const Rank& rank, const LocalOutcome& local, AlgoOutcome* out);

ncclDataType_t nccl_type(arnormDataType_t dtype);

// Facts about the run that the header, JSON and tuning table report.
struct RunInfo {
  int world_size = 0;
  std::vector<std::string> device_names;  // per rank
  std::vector<std::string> pci_bus_ids;   // per rank
  std::vector<std::string> hostnames;     // per rank
  std::vector<int> pids;                  // per rank
  std::string nccl_version;
  std::string arnorm_version;         // the library loaded (arnormGetVersion)
  std::string arnorm_header_version;  // the headers this binary was built against
  std::vector<std::pair<std::string, std::string>> environment;  // ARNORM_* and NCCL_* as set on rank 0
  std::string date_utc;  // ISO 8601
  size_t workspace_bytes = 0;
  int peer_access = 0;
  int max_blocks = 0;
};

// algbw in GB/s (1e9 bytes/s) for `bytes` moved in `time_us`.
inline double algbw_gbps(size_t bytes, double time_us) {
  return time_us > 0 ? static_cast<double>(bytes) / time_us * 1e-3 : 0.0;
}
// nccl-tests' bus bandwidth for all-reduce: algbw * 2(n-1)/n.
inline double allreduce_busbw(double algbw, int world) { return algbw * 2.0 * (world - 1) / world; }

}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_BENCH_H
