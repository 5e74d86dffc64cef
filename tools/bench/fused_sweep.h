// The fused sweep (--op fused): all-reduce + residual add + RMSNorm
// (arnormAllReduceAddRmsNorm) for each data type, hidden size and token
// count, against raw ncclAllReduce and against NCCL followed by arnorm's
// separate add&RMSNorm kernel (ARNORM_ALGO_NCCL, the baseline). One table
// row is printed as soon as its (tokens, hidden) is done.
//
// Checking (-c 1), separate from timing: every column runs once on fresh
// verifiable inputs (fused_verify.h). nccl+norm runs first and is checked
// against the definition; its out and residual_out are then the reference
// that every arnorm algorithm must match bit for bit (#wrong: differing
// elements of out plus of residual_out, overwritten guard bytes, and ranks
// whose out differs from rank 0's). Timing uses the same CUDA-graph procedure
// as the all-reduce sweep (timing.h), with the residual updated in place by
// every call, as inference engines call it; the residual is reset before each
// measurement, and the timing activations sum to zero over the ranks
// (fill_zero_sum) so the replays leave it unchanged.
#ifndef ARNORM_TOOLS_BENCH_FUSED_SWEEP_H
#define ARNORM_TOOLS_BENCH_FUSED_SWEEP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench.h"

namespace arnorm_bench {

struct FusedRow {
  size_t tokens = 0;
  size_t hidden = 0;
  size_t bytes = 0;  // tokens * hidden * sizeof(dtype): one rank's activations
  arnormDataType_t dtype = ARNORM_BFLOAT16;
  arnormDataType_t weight_dtype = ARNORM_BFLOAT16;
  std::vector<AlgoOutcome> algos;  // in the order of Options::fused_algos
  std::string auto_algo;           // what AUTO resolves to; empty: the query failed
};

// Collective over all ranks. Appends one FusedRow per (dtype, hidden, tokens)
// to *results; rank 0 prints the table as it goes. Wrong results and failed
// calls are recorded, not returned: non-zero only when the harness itself
// failed and the ranks can no longer continue in step.
int run_fused_sweep(const Options& opt, const Rank& rank, std::vector<FusedRow>* results);

void print_fused_columns(FILE* out, const Options& opt);
void print_fused_row(FILE* out, const Options& opt, const FusedRow& row);
void print_fused_summary(FILE* out, const Options& opt, const std::vector<FusedRow>& results);

// Failed calls and queries plus wrong values over the whole sweep; non-zero
// fails the run.
uint64_t fused_failures(const std::vector<FusedRow>& results);

// One JSON object per (row, algorithm), op "fused".
nlohmann::ordered_json fused_rows_json(const Options& opt, const std::vector<FusedRow>& results);

}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_FUSED_SWEEP_H
