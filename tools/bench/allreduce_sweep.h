// The all-reduce sweep: for each data type and message size, every selected
// algorithm is verified and timed, and one table row is printed as soon as
// the size is done.
#ifndef ARNORM_TOOLS_BENCH_ALLREDUCE_SWEEP_H
#define ARNORM_TOOLS_BENCH_ALLREDUCE_SWEEP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench.h"

namespace arnorm_bench {

struct SizeOutcome {
  size_t bytes = 0;
  size_t count = 0;
  arnormDataType_t dtype = ARNORM_BFLOAT16;
  std::vector<AlgoOutcome> algos;  // in the order of Options::algos
  std::string auto_algo;           // what ARNORM_ALGO_AUTO resolves to; empty: the query failed
};

// Collective over all ranks. Appends one SizeOutcome per (dtype, size) to
// *results; rank 0 prints the table as it goes. Wrong results and failed calls
// are recorded, not returned: the return value is non-zero only when the
// harness itself failed and the ranks can no longer continue in step.
int run_allreduce_sweep(const Options& opt, const Rank& rank, std::vector<SizeOutcome>* results);

// Rows, columns and the closing summary, as nccl-tests prints them.
void print_allreduce_columns(FILE* out, const Options& opt);
void print_allreduce_row(FILE* out, const Options& opt, int world, const SizeOutcome& row);
void print_allreduce_summary(FILE* out, const Options& opt, int world,
                             const std::vector<SizeOutcome>& results);

// Failed calls and queries plus wrong values over the whole sweep; non-zero
// fails the run.
uint64_t allreduce_failures(const std::vector<SizeOutcome>& results);

// One JSON object per (size, dtype, algorithm).
nlohmann::ordered_json allreduce_rows_json(const Options& opt, int world,
                                           const std::vector<SizeOutcome>& results);

}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_ALLREDUCE_SWEEP_H
