// The fused table: one `time #wrong` group per column (nccl, nccl+norm,
// oneshot, twoshot, auto), then what AUTO picked and how it compares with
// the unfused baseline (nccl+norm) and with the all-reduce alone (nccl).
#include <math.h>

#include <string>

#include "fused_sweep.h"
#include "report.h"

namespace arnorm_bench {
namespace {

constexpr int kGroupWidth = 19;  // "  %9s %7s"

int index_of(const Options& opt, Algo algo) { return column_of(opt.fused_algos, algo); }

// The ratio columns shown: auto against each baseline that is a column too.
std::vector<Algo> ratio_bases(const Options& opt) {
  std::vector<Algo> bases;
  if (index_of(opt, Algo::kAuto) < 0) return bases;
  for (Algo b : {Algo::kNcclNorm, Algo::kNccl})
    if (index_of(opt, b) >= 0) bases.push_back(b);
  return bases;
}

// auto / base at one row; false when either failed.
bool ratio_at(const Options& opt, const FusedRow& row, Algo base, double* ratio) {
  const AlgoOutcome& a = row.algos[static_cast<size_t>(index_of(opt, Algo::kAuto))];
  const AlgoOutcome& b = row.algos[static_cast<size_t>(index_of(opt, base))];
  if (a.failed || b.failed || b.time_us <= 0) return false;
  *ratio = a.time_us / b.time_us;
  return true;
}

void print_line(FILE* out, const Options& opt, const char* const lead[5], const char* time,
                const char* wrong, const char* auto_col, const std::vector<std::string>& ratios) {
  fprintf(out, "#%7s  %6s  %12s  %5s  %5s", lead[0], lead[1], lead[2], lead[3], lead[4]);
  for (size_t i = 0; i < opt.fused_algos.size(); ++i) fprintf(out, "  %9s %7s", time, wrong);
  fprintf(out, "  %9s", auto_col);
  for (const std::string& r : ratios) fprintf(out, "  %14s", r.c_str());
  fputc('\n', out);
}

}  // namespace

void print_fused_columns(FILE* out, const Options& opt) {
  fprintf(out, "#\n# fused all-reduce + residual add + RMSNorm (epsilon %g, residual in place)\n",
          opt.epsilon);
  fprintf(out, "#%7s  %6s  %12s  %5s  %5s", "", "", "", "", "");
  for (Algo a : opt.fused_algos) fprintf(out, "%s", centered(algo_name(a), kGroupWidth).c_str());
  fputc('\n', out);
  std::vector<std::string> names, units;
  for (Algo b : ratio_bases(opt)) {
    names.push_back(std::string("auto/") + algo_name(b));
    units.push_back("(time)");
  }
  static const char* const kNames[5] = {"tokens", "hidden", "size", "type", "wtype"};
  static const char* const kUnits[5] = {"", "", "(B)", "", ""};
  print_line(out, opt, kNames, "time", "#wrong", "auto", names);
  print_line(out, opt, kUnits, "(us)", "", "(picks)", units);
  fflush(out);
}

void print_fused_row(FILE* out, const Options& opt, const FusedRow& row) {
  fprintf(out, "%8zu  %6zu  %12zu  %5s  %5s", row.tokens, row.hidden, row.bytes,
          dtype_name(row.dtype), dtype_name(row.weight_dtype));
  for (const AlgoOutcome& a : row.algos) {
    char wrong[32];
    if (opt.check == 0 && a.wrong == 0) {
      snprintf(wrong, sizeof(wrong), "N/A");
    } else {
      snprintf(wrong, sizeof(wrong), "%llu", static_cast<unsigned long long>(a.wrong));
    }
    if (a.failed) {
      fprintf(out, "  %9s %7s", "error", wrong);
    } else {
      fprintf(out, "  %9.2f %7s", a.time_us, wrong);
    }
  }
  fprintf(out, "  %9s", row.auto_algo.empty() ? "error" : row.auto_algo.c_str());
  for (Algo base : ratio_bases(opt)) {
    double ratio = 0.0;
    if (ratio_at(opt, row, base, &ratio)) {
      fprintf(out, "  %14.3f", ratio);
    } else {
      fprintf(out, "  %14s", "-");
    }
  }
  fputc('\n', out);
  fflush(out);
}

void print_fused_summary(FILE* out, const Options& opt, const std::vector<FusedRow>& results) {
  const SweepTotals totals = sum_outcomes(results);
  print_totals(out, "Wrong values (fused) ", "Failed calls (fused) ", totals);
  for (Algo base : ratio_bases(opt)) {
    double log_sum = 0.0;
    int n = 0;
    for (const FusedRow& row : results) {
      double ratio = 0.0;
      if (ratio_at(opt, row, base, &ratio) && ratio > 0) {
        log_sum += log(ratio);
        ++n;
      }
    }
    fprintf(out, "# Geomean auto/%-9s: %-9.3f (over %d rows)\n", algo_name(base),
            n > 0 ? exp(log_sum / n) : 0.0, n);
  }
  fprintf(out, "#\n");
  fflush(out);
}

nlohmann::ordered_json fused_rows_json(const Options& opt, const std::vector<FusedRow>& results) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const FusedRow& row : results) {
    for (size_t i = 0; i < opt.fused_algos.size(); ++i) {
      const AlgoOutcome& a = row.algos[i];
      nlohmann::ordered_json r;
      r["op"] = "fused";
      r["tokens"] = row.tokens;
      r["hidden"] = row.hidden;
      r["bytes"] = row.bytes;
      r["type"] = dtype_name(row.dtype);
      r["weight_type"] = dtype_name(row.weight_dtype);
      r["algo"] = algo_name(opt.fused_algos[i]);
      r["time_us"] = a.failed ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(a.time_us);
      add_outcome_fields(&r, a, row.auto_algo);
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

}  // namespace arnorm_bench
