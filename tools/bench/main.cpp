// arnorm-bench: nccl-tests-style benchmark of arnorm's collectives.
//
// The process parses its flags, then becomes the launcher of one rank
// process per GPU (tools/common/launcher.h); each rank opens an NCCL
// communicator and an arnorm communicator on top of it and runs the sweep of
// the chosen operation (--op allreduce, fused, or all: both, all-reduce
// first). Only rank 0 prints the tables; every rank prints its own errors. Exit status: 0 when
// every call succeeded and every checked value was right; 1 for wrong values or failed calls (or a
// usage error); 2 when there are not enough GPUs; 3 when a rank could not set up or had to stop
// (CUDA/NCCL failure, see its messages); 124 when the watchdog fired.
#include <stdint.h>
#include <stdio.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <string>
#include <vector>

#include "allreduce_sweep.h"
#include "arnorm/arnorm_nccl.h"
#include "bench.h"
#include "common/check.h"
#include "common/launcher.h"
#include "fused_sweep.h"
#include "report.h"
#include "timing.h"
#include "tune.h"

namespace arnorm_bench {
namespace {

constexpr int kExitFailure = 1;
constexpr int kNoGpuExitCode = 2;
constexpr int kExitError = 3;

// Flags as typed; turned into Options by finish_options.
struct RawFlags {
  std::string dtype = "bf16";
  std::string weight_dtype;        // empty: the activations' type
  std::vector<std::string> algos;  // empty: every column of each op
};

// -d and --weight-dtype: parse_dtype's spellings (and "all" for -d).
CLI::Validator dtype_check(bool all_allowed) {
  return CLI::Validator(
      [all_allowed](std::string& value) -> std::string {
        arnormDataType_t t;
        if ((all_allowed && value == "all") || parse_dtype(value, &t)) return "";
        return value + " is not float, half, bf16 (float32, fp32, float16, fp16, bfloat16)" +
               (all_allowed ? " or all" : "");
      },
      "TYPE");
}

void add_flags(CLI::App& app, Options& opt, RawFlags& raw) {
  const CLI::AsSizeValue size_units(false);  // K/M/G are powers of 1024
  app.add_option("--op", opt.op,
                 "operation to sweep: allreduce; fused (all-reduce + residual add + RMSNorm, "
                 "arnormAllReduceAddRmsNorm); all (both, allreduce first) (default allreduce)")
      ->check(CLI::IsMember({"allreduce", "fused", "all"}));
  app.add_option("-b,--minbytes", opt.min_bytes,
                 "allreduce: smallest message in bytes; K, M, G suffixes are powers of 1024 "
                 "(default 1K)")
      ->transform(size_units);
  app.add_option("-e,--maxbytes", opt.max_bytes,
                 "allreduce: largest message in bytes (default 256M)")
      ->transform(size_units);
  app.add_option("-f,--stepfactor", opt.step_factor,
                 "allreduce: multiply the message size by this between rows (default 2)")
      ->check(CLI::Range(2, 1 << 20));
  app.add_option("--tokens", opt.tokens,
                 "fused: comma-separated token counts, one row each (default "
                 "1,2,4,...,8192, the powers of 2)")
      ->delimiter(',')
      ->check(CLI::Range(size_t(1), size_t(1) << 31));
  app.add_option("--hidden", opt.hidden,
                 "fused: comma-separated hidden sizes; every token count is run at each "
                 "(default 4096,7168,8192)")
      ->delimiter(',')
      ->check(CLI::Range(size_t(1), size_t(1) << 31));
  app.add_option("--weight-dtype", raw.weight_dtype,
                 "fused: type of the RMSNorm weight: float, half or bf16 (or float32/fp32, "
                 "float16/fp16, bfloat16) (default: as -d)")
      ->check(dtype_check(false));
  app.add_option("-n,--iters", opt.iters, "calls captured per CUDA graph (default 20)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("-w,--warmup_iters", opt.warmup, "eager calls before capture (default 5)")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("-c,--check", opt.check,
                 "1: verify every result bitwise and fail on any wrong value (default 1)")
      ->check(CLI::Range(0, 1));
  app.add_option("-G,--cudagraph", opt.replays,
                 "timed CUDA-graph replays per measurement; the median is reported (default 15). "
                 "0: no graph: time " + std::to_string(kEagerRounds) +
                     " rounds of -n eager calls each, so each call's host cost counts too")
      ->check(CLI::Range(0, 1 << 20));
  app.add_flag("--in-place", opt.in_place,
               "allreduce: recvbuf = sendbuf for every column, NCCL's too; the timed calls sum inputs "
               "that cancel over the ranks, so their result stays +0 and is checked (the fused op "
               "already updates its residual in place; its out may not overlap its input)");
  app.add_option("-d,--datatype", raw.dtype,
                 "element type (fused: of the activations, residual and outputs): float, half, "
                 "bf16 (or float32/fp32, float16/fp16, bfloat16) or all (default bf16)")
      ->check(dtype_check(true));
  app.add_option("-g,--ngpus", opt.ngpus,
                 "ranks, one GPU each (default: every visible GPU, at least 2)")
      ->check(CLI::Range(1, ARNORM_MAX_RANKS));
  app.add_option("-J,--output_file", opt.json_file, "write the results as JSON to this file");
  app.add_option("--algos", raw.algos,
                 "comma-separated columns from oneshot, twoshot, auto, nccl (raw ncclAllReduce) "
                 "and, for fused only, nccl+norm (ARNORM_ALGO_NCCL: NCCL, then arnorm's "
                 "add&RMSNorm kernel; the baseline) (default all)")
      ->delimiter(',')
      ->check(CLI::IsMember({"oneshot", "twoshot", "auto", "nccl", "nccl+norm"}));
  app.add_option("--workspace", opt.workspace_mib,
                 "peer workspace per GPU in MiB (arnormConfig_t.workspace_bytes; default: the "
                 "library's)")
      ->check(CLI::Range(size_t(1), size_t(1) << 20));
  app.add_option("--tune", opt.tune_file,
                 "write the fastest algorithm per size as a selection table for this world size "
                 "(format of data/tuning-default.json): the allreduce section from --op allreduce "
                 "(oneshot, twoshot, and nccl when its column is swept), add_rmsnorm from --op "
                 "fused (oneshot or twoshot; bytes = tokens*hidden*sizeof), "
                 "both from --op all; other sections and world sizes already in the file are "
                 "kept");
  app.add_option("--timeout", opt.timeout_seconds,
                 "kill every rank after this many seconds; 0: never (default 600)")
      ->check(CLI::Range(0.0, 1e9));
}

// Cross-flag rules CLI11 cannot express. Returns false after saying why.
bool finish_options(const RawFlags& raw, Options* opt) {
  if (opt->min_bytes == 0 || opt->min_bytes > opt->max_bytes) {
    fprintf(stderr, "arnorm-bench: need 0 < --minbytes <= --maxbytes (got %zu and %zu)\n",
            opt->min_bytes, opt->max_bytes);
    return false;
  }
  if (raw.dtype == "all") {
    opt->dtypes = {ARNORM_FLOAT32, ARNORM_FLOAT16, ARNORM_BFLOAT16};
  } else {
    arnormDataType_t t;
    parse_dtype(raw.dtype, &t);  // dtype_check already accepted it
    opt->dtypes = {t};
  }
  if (!raw.weight_dtype.empty()) {
    opt->weight_follows_dtype = false;
    parse_dtype(raw.weight_dtype, &opt->weight_dtype);  // dtype_check already accepted it
  }
  // Columns: all-reduce ones in the order given, fused ones in a fixed order.
  const std::vector<std::string> names =
      raw.algos.empty()
          ? std::vector<std::string>{"oneshot", "twoshot", "auto", "nccl", "nccl+norm"}
          : raw.algos;
  for (const std::string& name : names) {
    Algo a;
    if (!parse_algo(name, &a)) return false;  // IsMember already refused it
    if (a != Algo::kNcclNorm &&
        std::find(opt->algos.begin(), opt->algos.end(), a) == opt->algos.end())
      opt->algos.push_back(a);
  }
  for (Algo a : {Algo::kNccl, Algo::kNcclNorm, Algo::kOneshot, Algo::kTwoshot, Algo::kAuto}) {
    if (std::find(names.begin(), names.end(), algo_name(a)) != names.end())
      opt->fused_algos.push_back(a);
  }
  if (opt->runs_allreduce() && opt->algos.empty()) {
    fprintf(stderr,
            "arnorm-bench: nccl+norm is a column of --op fused only; --algos needs an "
            "all-reduce column too\n");
    return false;
  }
  if (opt->in_place && !opt->runs_allreduce()) {
    fprintf(stderr,
            "arnorm-bench: --in-place applies to the all-reduce sweep (--op allreduce or all); the "
            "fused op already updates its residual in place\n");
    return false;
  }
  if (opt->tokens.empty() || opt->hidden.empty()) {
    fprintf(stderr, "arnorm-bench: --tokens and --hidden need at least one value each\n");
    return false;
  }
  const size_t max_tokens = *std::max_element(opt->tokens.begin(), opt->tokens.end());
  const size_t max_hidden = *std::max_element(opt->hidden.begin(), opt->hidden.end());
  if (max_tokens > (SIZE_MAX / sizeof(float)) / max_hidden) {
    fprintf(stderr, "arnorm-bench: --tokens %zu x --hidden %zu is too large\n", max_tokens,
            max_hidden);
    return false;
  }
  const auto has = [&](Algo a) {
    return std::find(names.begin(), names.end(), algo_name(a)) != names.end();
  };
  if (!opt->tune_file.empty() && !(has(Algo::kOneshot) && has(Algo::kTwoshot))) {
    fprintf(stderr, "arnorm-bench: --tune compares oneshot with twoshot; keep both in --algos\n");
    return false;
  }
  if (!opt->tune_file.empty() && opt->replays == 0) {
    fprintf(stderr,
            "arnorm-bench: --tune needs CUDA-graph timing (-G 1 or more): eager times include the "
            "host's cost of each call, which the selection tables do not model\n");
    return false;
  }
  // Files written at the end, checked now: a typo must not cost the sweep.
  if (!opt->json_file.empty() && !output_path_writable(opt->json_file, "-J")) return false;
  if (!opt->tune_file.empty() &&
      (!output_path_writable(opt->tune_file, "--tune") || !tuning_file_usable(opt->tune_file)))
    return false;
  return true;
}

// Owns what a rank creates, released in reverse order. After a failure the
// NCCL communicator is aborted rather than destroyed: peers may be gone.
struct RankResources {
  cudaStream_t stream = nullptr;
  ncclComm_t nccl = nullptr;
  arnormComm_t comm = nullptr;
  bool failed = false;
  ~RankResources() {
    if (stream != nullptr && !failed) cudaStreamSynchronize(stream);
    if (comm != nullptr) arnormCommDestroy(comm);
    if (nccl != nullptr) {
      if (failed) {
        ncclCommAbort(nccl);
      } else {
        ncclCommDestroy(nccl);
      }
    }
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

// Creates the stream and both communicators. Non-zero on failure (reported).
int open_rank(const Options& opt, const arnorm_tools::RankContext& ctx, RankResources& res) {
  TOOLS_CUDA_TRY(cudaSetDevice(ctx.device));
  TOOLS_CUDA_TRY(cudaStreamCreateWithFlags(&res.stream, cudaStreamNonBlocking));
  TOOLS_NCCL_TRY(ncclCommInitRank(&res.nccl, ctx.world_size, ctx.nccl_id, ctx.rank));
  arnormConfig_t config = ARNORM_CONFIG_INIT;
  config.workspace_bytes = opt.workspace_mib << 20;
  const arnormStatus_t st = arnormCommCreateFromNccl(&res.comm, res.nccl, &config);
  if (st != ARNORM_SUCCESS) {
    TOOLS_ERROR("arnormCommCreateFromNccl: %s: %s", arnormGetErrorName(st),
                arnormGetLastErrorString());
    return 1;
  }
  return 0;
}

// Rank 0's closing output: JSON, tuning tables.
int finish_root(const Options& opt, const RunInfo& info, const std::vector<SizeOutcome>& results,
                const std::vector<FusedRow>& fused) {
  int status = 0;
  if (!opt.json_file.empty()) {
    nlohmann::ordered_json rows = allreduce_rows_json(opt, info.world_size, results);
    for (auto& row : fused_rows_json(opt, fused)) rows.push_back(std::move(row));
    if (write_results_json(opt.json_file, environment_json(opt, info), rows) != 0)
      status = kExitFailure;
  }
  if (!opt.tune_file.empty()) {
    const char* sections[2] = {"allreduce", "add_rmsnorm"};
    for (int i = 0; i < 2; ++i) {
      if (i == 0 ? !opt.runs_allreduce() : !opt.runs_fused()) continue;
      const int rc = i == 0 ? write_tuning_file(opt.tune_file, opt, info.world_size, results)
                            : write_fused_tuning_file(opt.tune_file, opt, info.world_size, fused);
      if (rc != 0) {
        status = kExitFailure;
      } else {
        printf("# Selection table (%s) for world %d written to %s\n", sections[i], info.world_size,
               opt.tune_file.c_str());
      }
    }
  }
  fflush(stdout);
  return status;
}

// The rank's whole run; the return value is its exit status.
int run_rank_body(const Options& opt, const arnorm_tools::RankContext& ctx, RankResources& res) {
  if (open_rank(opt, ctx, res) != 0) return kExitError;
  arnorm_tools::HostCollectives host(ctx);
  if (!host.ok()) return kExitError;
  const Rank rank{ctx, res.nccl, res.comm, res.stream, &host};
  RunInfo info;
  if (gather_run_info(rank, &info) != 0) return kExitError;
  if (rank.is_root()) print_run_header(stdout, opt, info);

  std::vector<SizeOutcome> results;
  std::vector<FusedRow> fused;
  if (opt.runs_allreduce()) {
    if (run_allreduce_sweep(opt, rank, &results) != 0) return kExitError;
    if (rank.is_root()) print_allreduce_summary(stdout, opt, info.world_size, results);
  }
  if (opt.runs_fused()) {
    if (run_fused_sweep(opt, rank, &fused) != 0) return kExitError;
    if (rank.is_root()) print_fused_summary(stdout, opt, fused);
  }
  // The same on every rank.
  int status = allreduce_failures(results) + fused_failures(fused) == 0 ? 0 : kExitFailure;
  if (rank.is_root() && finish_root(opt, info, results, fused) != 0) status = kExitFailure;
  return status;
}

int run_rank(const Options& opt, const arnorm_tools::RankContext& ctx) {
  RankResources res;
  const int status = run_rank_body(opt, ctx, res);
  // Wrong values leave the communicators usable; a harness failure may not.
  res.failed = status == kExitError;
  return status;
}

}  // namespace
}  // namespace arnorm_bench

int main(int argc, char** argv) {
  using namespace arnorm_bench;
  Options opt;
  RawFlags raw;
  CLI::App app{
      "arnorm-bench: all-reduce latency and bandwidth of arnorm (oneshot, twoshot, auto) against "
      "NCCL, in the format of nccl-tests (--op allreduce); or the fused all-reduce + residual "
      "add + RMSNorm against NCCL followed by a separate add&RMSNorm kernel (--op fused: rows "
      "--tokens x --hidden, residual updated in place, epsilon 1e-6). Starts one process per GPU "
      "by itself."};
  add_flags(app, opt, raw);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // app.exit prints the help or the error; CLI11's own codes (105, 109,
    // ...) become the documented 1 for a usage error.
    return app.exit(e) == 0 ? 0 : kExitFailure;
  }
  if (!finish_options(raw, &opt)) return kExitFailure;
  opt.argv.assign(argv, argv + argc);

  arnorm_tools::RankContext ctx;
  arnorm_tools::LaunchOptions launch;
  launch.no_gpu_exit_code = kNoGpuExitCode;
  launch.timeout_seconds = opt.timeout_seconds;
  launch.min_world_size = opt.ngpus > 0 ? opt.ngpus : 2;
  const int launched = arnorm_tools::launch_ranks(argc, argv, opt.ngpus, &ctx, launch);
  if (launched != -1) return launched;
  return run_rank(opt, ctx);
}
