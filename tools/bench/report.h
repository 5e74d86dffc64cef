// What every sweep reports about the run: the device list and versions at the
// top of the output, and the "environment" object of the JSON results.
#ifndef ARNORM_TOOLS_BENCH_REPORT_H
#define ARNORM_TOOLS_BENCH_REPORT_H

#include <stdio.h>

#include <nlohmann/json.hpp>
#include <string>

#include "bench.h"

namespace arnorm_bench {

// Collective: every rank contributes its device, host and pid. Fills the
// communicator facts from arnormCommGetInfo. Non-zero on failure (reported).
int gather_run_info(const Rank& rank, RunInfo* info);

// nccl-tests-style preamble: parameters, versions, one line per rank.
void print_run_header(FILE* out, const Options& opt, const RunInfo& info);

nlohmann::ordered_json environment_json(const Options& opt, const RunInfo& info);

// Writes {"environment": ..., "results": rows}. Non-zero on failure (reported).
int write_results_json(const std::string& path, const nlohmann::ordered_json& environment,
                       const nlohmann::ordered_json& rows);

}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_REPORT_H
