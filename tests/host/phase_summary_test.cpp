// PHASE CLOCK summary (core/phase_summary.h): made-up rows of marks.
#include "core/phase_summary.h"

#include <gtest/gtest.h>

#include <vector>

namespace arnorm {
namespace {

constexpr int kMarks = 6;

// One call's row: mark i at `at[i]` cycles after `base` (-1: not set).
std::vector<unsigned long long> row(unsigned long long base, std::vector<long long> at) {
  std::vector<unsigned long long> r(kMarks, 0);
  for (size_t i = 0; i < at.size(); ++i)
    if (at[i] >= 0) r[i] = base + static_cast<unsigned long long>(at[i]);
  return r;
}

std::vector<unsigned long long> rows(const std::vector<std::vector<unsigned long long>>& calls) {
  std::vector<unsigned long long> out;
  for (const auto& r : calls) out.insert(out.end(), r.begin(), r.end());
  return out;
}

TEST(PhaseSummary, MediansPerStepInTheKernelsOrder) {
  // Marks set in the order 0, 1, 2, 5, 3 (as the fused two-shot sets 10
  // before 3): the steps follow time, not mark numbers.
  const auto r = rows({row(1000, {0, 100, 300, 900, -1, 600}),
                       row(5000, {0, 120, 320, 1000, -1, 700}),
                       row(9000, {0, 80, 380, 1100, -1, 650})});
  const PhaseSummary s = summarize_phases(r.data(), 3, kMarks);
  EXPECT_EQ(s.calls, 3u);
  // {from, to, median cycles}: the medians of {100, 120, 80}, {200, 200,
  // 300}, {300, 380, 270} and {300, 300, 450}.
  const std::vector<std::vector<long long>> want = {{0, 1, 100}, {1, 2, 200}, {2, 5, 300}, {5, 3, 300}};
  ASSERT_EQ(s.steps.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(s.steps[i].from, want[i][0]);
    EXPECT_EQ(s.steps[i].to, want[i][1]);
    EXPECT_EQ(s.steps[i].cycles, want[i][2]);
    EXPECT_EQ(s.steps[i].calls, 3u);
  }
  EXPECT_EQ(s.total, 1000);  // of 900, 1000, 1100
}

TEST(PhaseSummary, SkipsEmptyRowsAndReadingsOfOlderCalls) {
  auto stale = row(7000, {0, 50, -1, -1, -1, -1});
  stale[4] = 6000;  // below mark 0: left by an older call in the same row
  const auto r = rows({row(0, {-1, -1, -1, -1, -1, -1}), stale, row(1, {-1, -1, -1, -1, -1, -1})});
  const PhaseSummary s = summarize_phases(r.data(), 3, kMarks);
  EXPECT_EQ(s.calls, 1u);
  ASSERT_EQ(s.steps.size(), 1u);
  EXPECT_EQ(s.steps[0].to, 1);
  EXPECT_EQ(s.steps[0].cycles, 50);
  EXPECT_EQ(s.total, 50);
}

TEST(PhaseSummary, NoCallsNoSteps) {
  const std::vector<unsigned long long> r(2 * kMarks, 0);
  const PhaseSummary s = summarize_phases(r.data(), 2, kMarks);
  EXPECT_EQ(s.calls, 0u);
  EXPECT_TRUE(s.steps.empty());
  EXPECT_EQ(s.total, 0);
}

TEST(PhaseSummary, StepsMissingFromSomeCallsCountOnlyWhereSet) {
  // Mark 2 only in the second call: steps 0>1 (both), 1>3 (first), 1>2 and 2>3 (second).
  const auto r = rows({row(100, {0, 10, -1, 40, -1, -1}), row(900, {0, 20, 30, 70, -1, -1})});
  const PhaseSummary s = summarize_phases(r.data(), 2, kMarks);
  EXPECT_EQ(s.calls, 2u);
  ASSERT_EQ(s.steps.size(), 4u);
  EXPECT_EQ(s.steps[0].from, 0);
  EXPECT_EQ(s.steps[0].calls, 2u);
  size_t seen13 = 0;
  for (const PhaseStep& st : s.steps)
    if (st.from == 1 && st.to == 3) seen13 = st.calls;
  EXPECT_EQ(seen13, 1u);
}

}  // namespace
}  // namespace arnorm
