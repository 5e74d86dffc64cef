#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

namespace arnorm_bench {

const char* algo_name(Algo algo) {
  switch (algo) {
    case Algo::kOneshot:
      return "oneshot";
    case Algo::kTwoshot:
      return "twoshot";
    case Algo::kAuto:
      return "auto";
    case Algo::kNccl:
      return "nccl";
    case Algo::kNcclNorm:
      return "nccl+norm";
  }
  return "?";
}

bool parse_algo(const std::string& name, Algo* algo) {
  for (Algo a : {Algo::kOneshot, Algo::kTwoshot, Algo::kAuto, Algo::kNccl, Algo::kNcclNorm}) {
    if (name == algo_name(a)) {
      *algo = a;
      return true;
    }
  }
  return false;
}

arnormAlgorithm_t to_arnorm(Algo algo) {
  switch (algo) {
    case Algo::kOneshot:
      return ARNORM_ALGO_ONESHOT;
    case Algo::kTwoshot:
      return ARNORM_ALGO_TWOSHOT;
    case Algo::kAuto:
      return ARNORM_ALGO_AUTO;
    case Algo::kNccl:
    case Algo::kNcclNorm:
      return ARNORM_ALGO_NCCL;
  }
  return ARNORM_ALGO_AUTO;
}

const char* dtype_name(arnormDataType_t dtype) {
  switch (dtype) {
    case ARNORM_FLOAT32:
      return "float";
    case ARNORM_FLOAT16:
      return "half";
    case ARNORM_BFLOAT16:
      return "bf16";
    case ARNORM_DTYPE_UNSET:
      break;
  }
  return "?";
}

bool parse_dtype(const std::string& name, arnormDataType_t* dtype) {
  static const std::pair<const char*, arnormDataType_t> kNames[] = {
      {"float", ARNORM_FLOAT32},    {"float32", ARNORM_FLOAT32}, {"fp32", ARNORM_FLOAT32},
      {"half", ARNORM_FLOAT16},     {"float16", ARNORM_FLOAT16}, {"fp16", ARNORM_FLOAT16},
      {"bf16", ARNORM_BFLOAT16},    {"bfloat16", ARNORM_BFLOAT16}};
  for (const auto& [spelling, t] : kNames) {
    if (name == spelling) {
      *dtype = t;
      return true;
    }
  }
  return false;
}

bool output_path_writable(const std::string& path, const char* flag) {
  struct stat st;
  if (path.back() == '/' || (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))) {
    fprintf(stderr, "arnorm-bench: %s %s: is a folder; name a file\n", flag, path.c_str());
    return false;
  }
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (access(dir.c_str(), W_OK | X_OK) != 0) {
    fprintf(stderr, "arnorm-bench: %s %s: cannot write in %s (%s)\n", flag, path.c_str(), dir.c_str(),
            strerror(errno));
    return false;
  }
  if (access(path.c_str(), F_OK) == 0 && access(path.c_str(), W_OK) != 0) {
    fprintf(stderr, "arnorm-bench: %s %s: the file exists and cannot be written (%s)\n", flag, path.c_str(),
            strerror(errno));
    return false;
  }
  return true;
}

size_t dtype_size(arnormDataType_t dtype) { return dtype == ARNORM_FLOAT32 ? 4 : 2; }

ncclDataType_t nccl_type(arnormDataType_t dtype) {
  switch (dtype) {
    case ARNORM_FLOAT32:
      return ncclFloat32;
    case ARNORM_FLOAT16:
      return ncclFloat16;
    case ARNORM_BFLOAT16:
      return ncclBfloat16;
    case ARNORM_DTYPE_UNSET:
      break;
  }
  return ncclFloat32;
}

int reduce_over_ranks(const Rank& rank, const LocalOutcome& local, AlgoOutcome* out) {
  std::vector<LocalOutcome> all(static_cast<size_t>(rank.ctx.world_size));
  if (rank.host->allgather(&local, all.data(), sizeof(local)) != 0) return 1;
  *out = AlgoOutcome{};
  for (const LocalOutcome& r : all) {
    out->time_us = std::max(out->time_us, r.median_us);
    out->wrong += r.wrong;
    out->failed = out->failed || r.failed != 0;
  }
  return 0;
}

}  // namespace arnorm_bench
