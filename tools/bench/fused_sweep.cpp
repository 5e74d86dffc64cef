#include "fused_sweep.h"

#include <algorithm>

#include "common/check.h"
#include "fused_verify.h"
#include "timing.h"

namespace arnorm_bench {
namespace {

// Device buffers for the largest row; every row uses a prefix of them. out
// and residual carry kGuardBytes of poison after the row's elements.
struct Buffers {
  void* input = nullptr;
  void* residual = nullptr;  // also residual_out: the calls update it in place
  void* out = nullptr;
  void* weight = nullptr;
  void* ref_out = nullptr;  // the nccl+norm reference (checking only)
  void* ref_residual = nullptr;
  unsigned long long* counter = nullptr;
  ~Buffers() {
    for (void* p :
         {input, residual, out, weight, ref_out, ref_residual, static_cast<void*>(counter)})
      if (p != nullptr) cudaFree(p);
  }
  int allocate(size_t max_bytes, size_t max_weight_bytes, bool check) {
    TOOLS_CUDA_TRY(cudaMalloc(&input, max_bytes));
    TOOLS_CUDA_TRY(cudaMalloc(&residual, max_bytes + kGuardBytes));
    TOOLS_CUDA_TRY(cudaMalloc(&out, max_bytes + kGuardBytes));
    TOOLS_CUDA_TRY(cudaMalloc(&weight, max_weight_bytes));
    if (check) {
      TOOLS_CUDA_TRY(cudaMalloc(&ref_out, max_bytes));
      TOOLS_CUDA_TRY(cudaMalloc(&ref_residual, max_bytes));
    }
    TOOLS_CUDA_TRY(cudaMalloc(&counter, sizeof(*counter)));
    return 0;
  }
};

struct Shape {
  arnormDataType_t dtype;
  arnormDataType_t weight_dtype;
  size_t tokens;
  size_t hidden;
  size_t count;  // tokens * hidden
  size_t bytes;
  uint64_t seed;  // distinct per row: no stale result can pass
};

Enqueue make_enqueue(const Options& opt, const Rank& rank, const Shape& s, Algo algo,
                     const Buffers& buf) {
  if (algo == Algo::kNccl) {
    return [&rank, s, &buf](cudaStream_t stream) -> int {
      return TOOLS_NCCL_OK(ncclAllReduce(buf.input, buf.out, s.count, nccl_type(s.dtype), ncclSum,
                                         rank.nccl, stream))
                 ? 0
                 : 1;
    };
  }
  arnormAddRmsNormArgs_t args = ARNORM_ADD_RMSNORM_ARGS_INIT;
  args.input = buf.input;
  args.residual = buf.residual;
  args.residual_out = buf.residual;  // in place
  args.weight = buf.weight;
  args.out = buf.out;
  args.tokens = s.tokens;
  args.hidden = s.hidden;
  args.epsilon = static_cast<float>(opt.epsilon);
  args.dtype = s.dtype;
  args.weight_dtype = s.weight_dtype;
  args.algo = to_arnorm(algo);
  return [&rank, s, algo, args](cudaStream_t stream) -> int {
    const arnormStatus_t st = arnormAllReduceAddRmsNorm(rank.comm, &args, stream);
    if (st == ARNORM_SUCCESS) return 0;
    TOOLS_ERROR("arnormAllReduceAddRmsNorm(%s, %zu x %zu of %s): %s: %s", algo_name(algo), s.tokens,
                s.hidden, dtype_name(s.dtype), arnormGetErrorName(st), arnormGetLastErrorString());
    return 1;
  };
}

// Fresh residual, poisoned out and guards, for one checked or timed call.
int reset_outputs(const Shape& s, const Buffers& buf, uint64_t seed, cudaStream_t stream) {
  if (fill_shared_residual(buf.residual, s.count, s.dtype, seed, stream) != 0) return 1;
  if (poison(static_cast<char*>(buf.residual) + s.bytes, kGuardBytes, stream) != 0) return 1;
  return poison(buf.out, s.bytes + kGuardBytes, stream);
}

// Raw ncclAllReduce of the row's activations, checked exactly.
int check_nccl(const Options& opt, const Rank& rank, const Shape& s, const Buffers& buf,
               LocalOutcome* lo) {
  if (poison(buf.out, s.bytes + kGuardBytes, rank.stream) != 0) return 1;
  if (make_enqueue(opt, rank, s, Algo::kNccl, buf)(rank.stream) != 0) {
    lo->failed = 1;
    return 0;
  }
  const AllReduceCheck check{buf.input,           buf.out, s.count, s.dtype, rank.ctx.rank,
                             rank.ctx.world_size, s.seed};
  uint64_t n = 0;
  if (count_allreduce_errors(check, buf.counter, rank.stream, &n) != 0) return 1;
  if (n != 0)
    TOOLS_ERROR("nccl, %zu x %zu of %s: %llu wrong values", s.tokens, s.hidden, dtype_name(s.dtype),
                static_cast<unsigned long long>(n));
  lo->wrong += n;
  return 0;
}

// One fused call on fresh inputs. nccl+norm is checked against the
// definition and becomes the reference (*ref_ok) when right; the others are
// compared with the reference bit for bit (against the definition when
// there is no good reference). Collective: one all-gather of out's hash.
int check_fused(const Options& opt, const Rank& rank, const Shape& s, const Buffers& buf, Algo algo,
                bool* ref_ok, LocalOutcome* lo) {
  if (reset_outputs(s, buf, s.seed, rank.stream) != 0) return 1;
  uint64_t mine[2] = {0, 0};  // hash of out, and 1 if there is one (the call succeeded)
  if (make_enqueue(opt, rank, s, algo, buf)(rank.stream) != 0) {
    lo->failed = 1;
  } else {
    const float eps = static_cast<float>(opt.epsilon);
    const FusedCheck fc{
        buf.out,        buf.residual, buf.weight,          s.tokens, s.hidden, s.dtype,
        s.weight_dtype, eps,          rank.ctx.world_size, s.seed};
    const bool against_ref = algo != Algo::kNcclNorm && *ref_ok;
    uint64_t n = 0;
    if (against_ref ? count_fused_differences(fc, buf.ref_out, buf.ref_residual, buf.counter,
                                              rank.stream, &n)
                    : count_fused_reference_errors(fc, buf.counter, rank.stream, &n))
      return 1;
    if (n != 0)
      TOOLS_ERROR("%s, %zu x %zu of %s: %llu wrong values (compared with %s)", algo_name(algo),
                  s.tokens, s.hidden, dtype_name(s.dtype), static_cast<unsigned long long>(n),
                  against_ref ? "nccl+norm bit for bit" : "the definition");
    lo->wrong += n;
    if (algo == Algo::kNcclNorm && n == 0) {
      TOOLS_CUDA_TRY(
          cudaMemcpyAsync(buf.ref_out, buf.out, s.bytes, cudaMemcpyDeviceToDevice, rank.stream));
      TOOLS_CUDA_TRY(cudaMemcpyAsync(buf.ref_residual, buf.residual, s.bytes,
                                     cudaMemcpyDeviceToDevice, rank.stream));
      *ref_ok = true;
    }
    if (hash_elements(buf.out, s.count, s.dtype, buf.counter, rank.stream, &mine[0]) != 0) return 1;
    mine[1] = 1;
  }
  std::vector<uint64_t> all(2 * static_cast<size_t>(rank.ctx.world_size));  // rank 0's first
  if (rank.host->allgather(mine, all.data(), sizeof(mine)) != 0) return 1;
  if (mine[1] != 0 && all[1] != 0 && mine[0] != all[0]) {
    TOOLS_ERROR("%s, %zu x %zu of %s: out differs from rank 0's", algo_name(algo), s.tokens,
                s.hidden, dtype_name(s.dtype));
    lo->wrong += 1;
  }
  return 0;
}

int column_of(const Options& opt, Algo algo) {
  const auto it = std::find(opt.fused_algos.begin(), opt.fused_algos.end(), algo);
  return it == opt.fused_algos.end() ? -1 : static_cast<int>(it - opt.fused_algos.begin());
}

// Every column once on the row's fresh inputs; nccl+norm always (the
// reference), before the arnorm algorithms.
int check_row(const Options& opt, const Rank& rank, const Shape& s, const Buffers& buf,
              std::vector<LocalOutcome>* local) {
  if (fill_verifiable(buf.input, s.count, s.dtype, rank.ctx.rank, s.seed, rank.stream) != 0 ||
      fill_weight(buf.weight, s.hidden, s.weight_dtype, s.seed, rank.stream) != 0)
    return 1;
  const int nccl = column_of(opt, Algo::kNccl);
  if (nccl >= 0 && check_nccl(opt, rank, s, buf, &(*local)[static_cast<size_t>(nccl)]) != 0)
    return 1;
  bool ref_ok = false;
  LocalOutcome unlisted{0.0, 0, 0, 0};  // nccl+norm when it is not a column
  for (Algo algo : {Algo::kNcclNorm, Algo::kOneshot, Algo::kTwoshot, Algo::kAuto}) {
    const int col = column_of(opt, algo);
    if (col < 0 && algo != Algo::kNcclNorm) continue;
    LocalOutcome* lo = col >= 0 ? &(*local)[static_cast<size_t>(col)] : &unlisted;
    if (check_fused(opt, rank, s, buf, algo, &ref_ok, lo) != 0) return 1;
  }
  return 0;
}

// Timing of one column. The activations sum to zero over the ranks, so the
// residual, updated in place by every call of the graph, keeps its value.
int time_column(const Options& opt, const Rank& rank, const Shape& s, const Buffers& buf, Algo algo,
                LocalOutcome* lo) {
  const uint64_t seed = s.seed ^ 0x5bd1e995ull;
  if (fill_zero_sum(buf.input, s.count, s.dtype, rank.ctx.rank, rank.ctx.world_size, seed,
                    rank.stream) != 0 ||
      fill_weight(buf.weight, s.hidden, s.weight_dtype, seed, rank.stream) != 0 ||
      reset_outputs(s, buf, seed, rank.stream) != 0)
    return 1;
  // The timed replays are checked too: against one eager call of the same
  // column on the same inputs (its algorithm met the definition in
  // check_row), bit for bit, out and the residual every replay updated in
  // place. arnorm's columns only: their sum of these integers is exactly
  // zero, so the residual must come back unchanged after every replay;
  // NCCL's order of rounding need not give zero.
  const bool check_replays =
      opt.check != 0 && (algo == Algo::kOneshot || algo == Algo::kTwoshot || algo == Algo::kAuto);
  if (check_replays) {
    if (make_enqueue(opt, rank, s, algo, buf)(rank.stream) != 0) return 1;
    TOOLS_CUDA_TRY(cudaMemcpyAsync(buf.ref_out, buf.out, s.bytes, cudaMemcpyDeviceToDevice, rank.stream));
    TOOLS_CUDA_TRY(
        cudaMemcpyAsync(buf.ref_residual, buf.residual, s.bytes, cudaMemcpyDeviceToDevice, rank.stream));
    if (reset_outputs(s, buf, seed, rank.stream) != 0) return 1;
  }
  TimingResult timing;
  const TimingConfig cfg{opt.warmup, opt.iters, opt.replays};
  if (time_calls(make_enqueue(opt, rank, s, algo, buf), cfg, rank.stream, *rank.host, &timing) !=
      0)
    return 1;
  lo->median_us = timing.median_us;
  if (timing.op_failed) lo->failed = 1;
  if (check_replays && !timing.op_failed) {
    const FusedCheck fc{buf.out,        buf.residual, buf.weight, s.tokens, s.hidden, s.dtype,
                        s.weight_dtype, static_cast<float>(opt.epsilon), rank.ctx.world_size, seed};
    uint64_t n = 0;
    if (count_fused_differences(fc, buf.ref_out, buf.ref_residual, buf.counter, rank.stream, &n) != 0)
      return 1;
    if (n != 0)
      TOOLS_ERROR("%s, %zu x %zu of %s: %llu values differ after the timed calls from one eager call",
                  algo_name(algo), s.tokens, s.hidden, dtype_name(s.dtype), static_cast<unsigned long long>(n));
    lo->wrong += n;
  }
  if (algo != Algo::kNccl) {
    const arnormStatus_t st = arnormCommGetAsyncError(rank.comm);
    if (st != ARNORM_SUCCESS) {
      TOOLS_ERROR("%s, %zu x %zu of %s: asynchronous error %s: %s", algo_name(algo), s.tokens,
                  s.hidden, dtype_name(s.dtype), arnormGetErrorName(st),
                  arnormGetLastErrorString());
      lo->wrong += 1;
    }
  }
  return 0;
}

// Empty when the library could not say (reported; counts as a failure).
std::string auto_choice(const Rank& rank, const Shape& s) {
  arnormAlgorithm_t algo = ARNORM_ALGO_AUTO;
  const arnormStatus_t st =
      arnormSelectAlgorithmAddRmsNorm(rank.comm, s.tokens, s.hidden, s.dtype, &algo);
  if (st == ARNORM_SUCCESS) return arnormAlgorithmName(algo);
  TOOLS_ERROR("arnormSelectAlgorithmAddRmsNorm(%zu x %zu of %s): %s: %s", s.tokens, s.hidden,
              dtype_name(s.dtype), arnormGetErrorName(st), arnormGetLastErrorString());
  return std::string();
}

int run_row(const Options& opt, const Rank& rank, const Shape& s, const Buffers& buf,
            FusedRow* row) {
  std::vector<LocalOutcome> local(opt.fused_algos.size(), LocalOutcome{0.0, 0, 0, 0});
  if (opt.check != 0 && check_row(opt, rank, s, buf, &local) != 0) return 1;
  for (size_t i = 0; i < opt.fused_algos.size(); ++i)
    if (time_column(opt, rank, s, buf, opt.fused_algos[i], &local[i]) != 0) return 1;
  for (const LocalOutcome& lo : local) {
    AlgoOutcome outcome;
    if (reduce_over_ranks(rank, lo, &outcome) != 0) return 1;
    row->algos.push_back(outcome);
  }
  row->auto_algo = auto_choice(rank, s);
  return 0;
}

}  // namespace

int run_fused_sweep(const Options& opt, const Rank& rank, std::vector<FusedRow>* results) {
  size_t max_elem = 0, max_weight = 0;
  for (arnormDataType_t t : opt.dtypes) {
    max_elem = std::max(max_elem, dtype_size(t));
    max_weight = std::max(max_weight, dtype_size(opt.weight_type_for(t)));
  }
  const size_t max_tokens = *std::max_element(opt.tokens.begin(), opt.tokens.end());
  const size_t max_hidden = *std::max_element(opt.hidden.begin(), opt.hidden.end());
  Buffers buf;
  if (buf.allocate(max_tokens * max_hidden * max_elem, max_hidden * max_weight, opt.check != 0) !=
      0)
    return 1;
  if (rank.is_root()) print_fused_columns(stdout, opt);
  uint64_t index = 0;
  for (arnormDataType_t dtype : opt.dtypes) {
    for (size_t hidden : opt.hidden) {
      for (size_t tokens : opt.tokens) {
        const size_t count = tokens * hidden;
        const Shape s{dtype,
                      opt.weight_type_for(dtype),
                      tokens,
                      hidden,
                      count,
                      count * dtype_size(dtype),
                      0xf00d000000000000ull ^ (++index << 8)};
        FusedRow row;
        row.tokens = tokens;
        row.hidden = hidden;
        row.bytes = s.bytes;
        row.dtype = dtype;
        row.weight_dtype = s.weight_dtype;
        if (run_row(opt, rank, s, buf, &row) != 0) return 1;
        if (rank.is_root()) print_fused_row(stdout, opt, row);
        results->push_back(row);
      }
    }
  }
  return 0;
}

uint64_t fused_failures(const std::vector<FusedRow>& results) {
  uint64_t n = 0;
  for (const FusedRow& row : results) {
    for (const AlgoOutcome& a : row.algos) n += a.wrong + (a.failed ? 1 : 0);
    if (row.auto_algo.empty()) n += 1;
  }
  return n;
}

}  // namespace arnorm_bench
