#include "allreduce_sweep.h"

#include "common/check.h"
#include "fused_verify.h"
#include "timing.h"
#include "verify.h"

namespace arnorm_bench {
namespace {

// Device buffers for the largest size; every size uses a prefix of them.
// The output buffer (recv, or send in place) carries kGuardBytes of poison
// after the largest output.
struct Buffers {
  void* send = nullptr;
  void* recv = nullptr;  // nullptr in place
  unsigned long long* counter = nullptr;
  ~Buffers() {
    if (send != nullptr) cudaFree(send);
    if (recv != nullptr) cudaFree(recv);
    if (counter != nullptr) cudaFree(counter);
  }
  int allocate(size_t max_bytes, bool in_place) {
    if (in_place) {
      TOOLS_CUDA_TRY(cudaMalloc(&send, max_bytes + kGuardBytes));
    } else {
      TOOLS_CUDA_TRY(cudaMalloc(&send, max_bytes));
      TOOLS_CUDA_TRY(cudaMalloc(&recv, max_bytes + kGuardBytes));
    }
    TOOLS_CUDA_TRY(cudaMalloc(&counter, sizeof(*counter)));
    return 0;
  }
  void* out() const { return recv != nullptr ? recv : send; }
};

struct Case {
  Algo algo;
  arnormDataType_t dtype;
  size_t count;
  size_t bytes;
  uint64_t seed;  // distinct per (dtype, size, algorithm): no stale result can pass
};

Enqueue make_enqueue(const Rank& rank, const Case& c, const Buffers& buf) {
  return [&rank, c, &buf](cudaStream_t stream) -> int {
    if (c.algo == Algo::kNccl) {
      return TOOLS_NCCL_OK(ncclAllReduce(buf.send, buf.out(), c.count, nccl_type(c.dtype), ncclSum,
                                         rank.nccl, stream))
                 ? 0
                 : 1;
    }
    const arnormStatus_t st = arnormAllReduce(rank.comm, buf.send, buf.out(), c.count, c.dtype,
                                              to_arnorm(c.algo), stream);
    if (st == ARNORM_SUCCESS) return 0;
    TOOLS_ERROR("arnormAllReduce(%s, %zu bytes of %s): %s: %s", algo_name(c.algo), c.bytes,
                dtype_name(c.dtype), arnormGetErrorName(st), arnormGetLastErrorString());
    return 1;
  };
}

// Fresh verifiable input, poisoned output (and guard); in place, the input
// is the output, so only the guard is poisoned. zero_sum: inputs that sum to
// zero over the ranks (fill_zero_sum), for the timed calls in place.
int prepare(const Rank& rank, const Case& c, const Buffers& buf, uint64_t seed, bool zero_sum) {
  const int filled = zero_sum ? fill_zero_sum(buf.send, c.count, c.dtype, rank.ctx.rank, rank.ctx.world_size, seed,
                                              rank.stream)
                              : fill_verifiable(buf.send, c.count, c.dtype, rank.ctx.rank, seed, rank.stream);
  if (filled != 0) return 1;
  if (buf.recv != nullptr) return poison(buf.recv, c.bytes + kGuardBytes, rank.stream);
  return poison(static_cast<char*>(buf.send) + c.bytes, kGuardBytes, rank.stream);
}

int count_wrong(const Rank& rank, const Case& c, const Buffers& buf, uint64_t seed, bool zero_sum,
                const char* phase, uint64_t* wrong) {
  const AllReduceCheck check{buf.send,      buf.out(),          c.count, c.dtype, rank.ctx.rank,
                             rank.ctx.world_size, seed, zero_sum};
  uint64_t n = 0;
  if (count_allreduce_errors(check, buf.counter, rank.stream, &n) != 0) return 1;
  if (n != 0) {
    TOOLS_ERROR("%s, %zu bytes of %s, %s: %llu wrong values", algo_name(c.algo), c.bytes,
                dtype_name(c.dtype), phase, static_cast<unsigned long long>(n));
  }
  *wrong += n;
  return 0;
}

// Verification, then timing, of one case on this rank. The timing inputs are
// verifiable too, so the result of the replayed graph is checked as well. In
// place, every timed call sums the previous call's result again: inputs that
// sum to zero over the ranks make the first call's result +0 everywhere and
// keep it so, which every later call must leave bit for bit; then one more
// call on fresh verifiable inputs, which +0 cannot stand in for.
int measure(const Options& opt, const Rank& rank, const Case& c, const Buffers& buf,
            LocalOutcome* out) {
  *out = LocalOutcome{0.0, 0, 0, 0};
  const Enqueue op = make_enqueue(rank, c, buf);
  if (opt.check != 0) {
    if (prepare(rank, c, buf, c.seed, false) != 0) return 1;
    if (op(rank.stream) != 0) {
      out->failed = 1;
    } else if (count_wrong(rank, c, buf, c.seed, false, "single call", &out->wrong) != 0) {
      return 1;
    }
  }
  const uint64_t timing_seed = c.seed ^ 0x5bd1e995ull;
  if (prepare(rank, c, buf, timing_seed, opt.in_place) != 0) return 1;
  TimingResult timing;
  const TimingConfig cfg{opt.warmup, opt.iters, opt.replays};
  if (time_calls(op, cfg, rank.stream, *rank.host, &timing) != 0) return 1;
  out->median_us = timing.median_us;
  if (timing.op_failed) {
    out->failed = 1;
  } else if (opt.check != 0 && count_wrong(rank, c, buf, timing_seed, opt.in_place,
                                           opt.replays == 0 ? "eager rounds" : "graph replay", &out->wrong) != 0) {
    return 1;
  } else if (opt.check != 0 && opt.in_place) {
    // +0 everywhere cannot tell a stale unit from a fresh one: one more call,
    // after all the timed ones, on fresh verifiable inputs.
    const uint64_t after_seed = timing_seed ^ 0x27d4eb2full;
    if (prepare(rank, c, buf, after_seed, false) != 0) return 1;
    if (op(rank.stream) != 0) {
      out->failed = 1;
    } else if (count_wrong(rank, c, buf, after_seed, false, "in place after the timed calls", &out->wrong) != 0) {
      return 1;
    }
  }
  if (c.algo != Algo::kNccl) {
    const arnormStatus_t st = arnormCommGetAsyncError(rank.comm);
    if (st != ARNORM_SUCCESS) {
      TOOLS_ERROR("%s, %zu bytes of %s: asynchronous error %s: %s", algo_name(c.algo), c.bytes,
                  dtype_name(c.dtype), arnormGetErrorName(st), arnormGetLastErrorString());
      out->wrong += 1;
    }
  }
  return 0;
}

std::vector<size_t> sweep_sizes(const Options& opt) {
  std::vector<size_t> sizes;
  for (size_t s = opt.min_bytes; s <= opt.max_bytes; s *= opt.step_factor) {
    sizes.push_back(s);
    if (s > opt.max_bytes / opt.step_factor) break;  // next step would pass max (or overflow)
  }
  return sizes;
}

uint64_t case_seed(size_t size_index, arnormDataType_t dtype, Algo algo) {
  return (static_cast<uint64_t>(size_index) << 16) ^ (static_cast<uint64_t>(dtype) << 8) ^
         static_cast<uint64_t>(algo) ^ 0xa5a5000000000000ull;
}

// Empty when the library could not say (reported; counts as a failure).
std::string auto_choice(const Rank& rank, size_t count, arnormDataType_t dtype) {
  arnormAlgorithm_t algo = ARNORM_ALGO_AUTO;
  const arnormStatus_t st = arnormSelectAlgorithm(rank.comm, count, dtype, &algo);
  if (st == ARNORM_SUCCESS) return arnormAlgorithmName(algo);
  TOOLS_ERROR("arnormSelectAlgorithm(%zu elements of %s): %s: %s", count, dtype_name(dtype),
              arnormGetErrorName(st), arnormGetLastErrorString());
  return std::string();
}

}  // namespace

int run_allreduce_sweep(const Options& opt, const Rank& rank, std::vector<SizeOutcome>* results) {
  Buffers buf;
  if (buf.allocate(opt.max_bytes, opt.in_place) != 0) return 1;
  const std::vector<size_t> sizes = sweep_sizes(opt);
  if (rank.is_root()) print_allreduce_columns(stdout, opt);
  for (arnormDataType_t dtype : opt.dtypes) {
    const size_t elem = dtype_size(dtype);
    for (size_t i = 0; i < sizes.size(); ++i) {
      SizeOutcome row;
      row.dtype = dtype;
      row.count = sizes[i] / elem;
      row.bytes = row.count * elem;
      if (row.count == 0) continue;  // smaller than one element
      for (Algo algo : opt.algos) {
        const Case c{algo, dtype, row.count, row.bytes, case_seed(i, dtype, algo)};
        LocalOutcome local;
        if (measure(opt, rank, c, buf, &local) != 0) return 1;
        AlgoOutcome outcome;
        if (reduce_over_ranks(rank, local, &outcome) != 0) return 1;
        row.algos.push_back(outcome);
      }
      row.auto_algo = auto_choice(rank, row.count, dtype);
      if (rank.is_root()) print_allreduce_row(stdout, opt, rank.ctx.world_size, row);
      results->push_back(row);
    }
  }
  return 0;
}

uint64_t allreduce_failures(const std::vector<SizeOutcome>& results) {
  uint64_t n = 0;
  for (const SizeOutcome& row : results) {
    for (const AlgoOutcome& a : row.algos) n += a.wrong + (a.failed ? 1 : 0);
    if (row.auto_algo.empty()) n += 1;
  }
  return n;
}

}  // namespace arnorm_bench
