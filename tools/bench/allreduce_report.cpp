// The all-reduce table, in nccl-tests' layout: one group of
// `time algbw busbw #wrong` per algorithm, then what AUTO picked and how it
// compares with NCCL.
#include <string>

#include "allreduce_sweep.h"
#include "report.h"

namespace arnorm_bench {
namespace {

constexpr int kGroupWidth = 35;  // "  %9s %7s %7s %7s"

int index_of(const Options& opt, Algo algo) { return column_of(opt.algos, algo); }

bool has_ratio(const Options& opt) {
  return index_of(opt, Algo::kAuto) >= 0 && index_of(opt, Algo::kNccl) >= 0;
}

void print_line(FILE* out, const char* c0, const char* c1, const char* c2, const char* c3,
                const Options& opt, const char* const group[4], const char* auto_col,
                const char* ratio_col) {
  fprintf(out, "#%11s  %12s  %6s  %6s", c0, c1, c2, c3);
  for (size_t i = 0; i < opt.algos.size(); ++i)
    fprintf(out, "  %9s %7s %7s %7s", group[0], group[1], group[2], group[3]);
  fprintf(out, "  %9s", auto_col);
  if (has_ratio(opt)) fprintf(out, "  %9s", ratio_col);
  fputc('\n', out);
}

double busbw_of(const AlgoOutcome& a, size_t bytes, int world) {
  return allreduce_busbw(algbw_gbps(bytes, a.time_us), world);
}

}  // namespace

void print_allreduce_columns(FILE* out, const Options& opt) {
  fprintf(out, "#\n#%11s  %12s  %6s  %6s", "", "", "", "");
  for (Algo a : opt.algos) fprintf(out, "%s", centered(algo_name(a), kGroupWidth).c_str());
  fputc('\n', out);
  static const char* const kNames[4] = {"time", "algbw", "busbw", "#wrong"};
  static const char* const kUnits[4] = {"(us)", "(GB/s)", "(GB/s)", ""};
  print_line(out, "size", "count", "type", "redop", opt, kNames, "auto", "auto/nccl");
  print_line(out, "(B)", "(elements)", "", "", opt, kUnits, "(picks)", "(time)");
  fflush(out);
}

void print_allreduce_row(FILE* out, const Options& opt, int world, const SizeOutcome& row) {
  fprintf(out, "%12zu  %12zu  %6s  %6s", row.bytes, row.count, dtype_name(row.dtype), "sum");
  for (const AlgoOutcome& a : row.algos) {
    char wrong[32];
    if (opt.check == 0 && a.wrong == 0) {
      snprintf(wrong, sizeof(wrong), "N/A");
    } else {
      snprintf(wrong, sizeof(wrong), "%llu", static_cast<unsigned long long>(a.wrong));
    }
    if (a.failed) {
      fprintf(out, "  %9s %7s %7s %7s", "error", "-", "-", wrong);
    } else {
      const double algbw = algbw_gbps(row.bytes, a.time_us);
      fprintf(out, "  %9.2f %7.2f %7.2f %7s", a.time_us, algbw, allreduce_busbw(algbw, world),
              wrong);
    }
  }
  fprintf(out, "  %9s", row.auto_algo.empty() ? "error" : row.auto_algo.c_str());
  if (has_ratio(opt)) {
    const AlgoOutcome& a = row.algos[static_cast<size_t>(index_of(opt, Algo::kAuto))];
    const AlgoOutcome& n = row.algos[static_cast<size_t>(index_of(opt, Algo::kNccl))];
    if (a.failed || n.failed || n.time_us <= 0) {
      fprintf(out, "  %9s", "-");
    } else {
      fprintf(out, "  %9.3f", a.time_us / n.time_us);
    }
  }
  fputc('\n', out);
  fflush(out);
}

void print_allreduce_summary(FILE* out, const Options& opt, int world,
                             const std::vector<SizeOutcome>& results) {
  const SweepTotals totals = sum_outcomes(results);
  print_totals(out, "Out of bounds values ", "Failed calls         ", totals);
  for (size_t i = 0; i < opt.algos.size(); ++i) {
    double sum = 0.0;
    int n = 0;
    for (const SizeOutcome& row : results) {
      if (!row.algos[i].ok()) continue;
      sum += busbw_of(row.algos[i], row.bytes, world);
      ++n;
    }
    fprintf(out, "# Avg bus bandwidth    : %-9g (%s, over %d passing sizes)\n",
            n > 0 ? sum / n : 0.0, algo_name(opt.algos[i]), n);
  }
  fprintf(out, "#\n");
  fflush(out);
}

nlohmann::ordered_json allreduce_rows_json(const Options& opt, int world,
                                           const std::vector<SizeOutcome>& results) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const SizeOutcome& row : results) {
    for (size_t i = 0; i < opt.algos.size(); ++i) {
      const AlgoOutcome& a = row.algos[i];
      nlohmann::ordered_json r;
      r["op"] = "allreduce";
      r["bytes"] = row.bytes;
      r["count"] = row.count;
      r["type"] = dtype_name(row.dtype);
      r["redop"] = "sum";
      r["algo"] = algo_name(opt.algos[i]);
      if (a.failed) {
        r["time_us"] = nullptr;
        r["algbw"] = nullptr;
        r["busbw"] = nullptr;
      } else {
        r["time_us"] = a.time_us;
        r["algbw"] = algbw_gbps(row.bytes, a.time_us);
        r["busbw"] = busbw_of(a, row.bytes, world);
      }
      add_outcome_fields(&r, a, row.auto_algo);
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

}  // namespace arnorm_bench
