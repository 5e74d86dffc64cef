#include "core/phase_summary.h"

#include <algorithm>
#include <map>
#include <utility>

namespace arnorm {
namespace {

long long median(std::vector<long long>& v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace

PhaseSummary summarize_phases(const unsigned long long* rows, int calls, int marks) {
  // Per step (mark, next mark): its cycles, and when it began after mark 0.
  std::map<std::pair<int, int>, std::vector<long long>> cycles, starts;
  std::vector<long long> totals;
  for (int call = 0; call < calls; ++call) {
    const unsigned long long* row = rows + static_cast<size_t>(call) * static_cast<size_t>(marks);
    if (row[0] == 0) continue;
    // A call's marks all come from threads of CTA 0, on one multiprocessor,
    // so their clock order is the order they happened in.
    std::vector<std::pair<unsigned long long, int>> set;
    for (int i = 0; i < marks; ++i)
      if (row[i] != 0 && row[i] >= row[0]) set.emplace_back(row[i], i);
    std::sort(set.begin(), set.end());
    for (size_t k = 1; k < set.size(); ++k) {
      const std::pair<int, int> step{set[k - 1].second, set[k].second};
      cycles[step].push_back(static_cast<long long>(set[k].first - set[k - 1].first));
      starts[step].push_back(static_cast<long long>(set[k - 1].first - set[0].first));
    }
    totals.push_back(static_cast<long long>(set.back().first - set.front().first));
  }
  PhaseSummary out;
  out.calls = totals.size();
  if (totals.empty()) return out;
  out.total = median(totals);
  std::vector<std::pair<long long, std::pair<int, int>>> order;
  for (auto& [step, v] : starts) order.emplace_back(median(v), step);
  std::sort(order.begin(), order.end());
  for (const auto& [start, step] : order) {
    std::vector<long long>& v = cycles[step];
    out.steps.push_back(PhaseStep{step.first, step.second, median(v), v.size()});
  }
  return out;
}

}  // namespace arnorm
