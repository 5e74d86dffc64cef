// What every sweep reports about the run: the device list and versions at the
// top of the output, and the "environment" object of the JSON results.
#ifndef ARNORM_TOOLS_BENCH_REPORT_H
#define ARNORM_TOOLS_BENCH_REPORT_H

#include <stdio.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench.h"

namespace arnorm_bench {

// Collective: every rank contributes its device, host and pid. Fills the
// communicator facts from arnormCommGetInfo. Non-zero on failure (reported).
int gather_run_info(const Rank& rank, RunInfo* info);

// Index of `algo` among a sweep's columns; -1 if it is not one.
int column_of(const std::vector<Algo>& columns, Algo algo);

// `text` padded with spaces on both sides to `width` (table headings).
std::string centered(const std::string& text, int width);

// nccl-tests-style preamble: parameters, versions, one line per rank.
void print_run_header(FILE* out, const Options& opt, const RunInfo& info);

nlohmann::ordered_json environment_json(const Options& opt, const RunInfo& info);

// Writes {"environment": ..., "results": rows}. Non-zero on failure (reported).
int write_results_json(const std::string& path, const nlohmann::ordered_json& environment,
                       const nlohmann::ordered_json& rows);

// Totals of a sweep: wrong values and failed calls over every row's
// algorithms, a row whose auto query failed counting as one failed call.
struct SweepTotals {
  uint64_t wrong = 0;
  uint64_t failed = 0;
};

template <typename Row>
SweepTotals sum_outcomes(const std::vector<Row>& rows) {
  SweepTotals t;
  for (const Row& row : rows) {
    for (const AlgoOutcome& a : row.algos) {
      t.wrong += a.wrong;
      t.failed += a.failed ? 1 : 0;
    }
    t.failed += row.auto_algo.empty() ? 1 : 0;
  }
  return t;
}

// The fields every JSON result row ends with.
void add_outcome_fields(nlohmann::ordered_json* row, const AlgoOutcome& a, const std::string& auto_algo);

// The two nccl-tests style verdict lines, with the labels given.
void print_totals(FILE* out, const char* wrong_label, const char* failed_label, const SweepTotals& t);

}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_REPORT_H
