// PHASE CLOCK report: a measurement build's marks (device/phase_clock.cuh),
// one line per operation on stderr.
#include <cstdio>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/phase_summary.h"

namespace arnorm {

void report_phase_clock(const arnormComm* comm) {
  if (comm->phase_clock == nullptr) return;
  std::vector<unsigned long long> words(kPhaseClockWords);
  // Destroy runs after the communicator's last call has completed (the
  // header's contract), so the marks are final; no device-wide wait and no
  // legacy-stream copy, which would break a capture in progress
  // (CAPTURE-SAFE SET-UP).
  if (copy_to_host_privately(words.data(), comm->phase_clock, words.size() * sizeof(words[0])) != cudaSuccess) {
    cudaGetLastError();
    std::fprintf(stderr, "arnorm phase clock, rank %d: could not read the marks\n", comm->rank);
    return;
  }
  for (int op = 0; op < kPhaseOps; ++op) {
    const PhaseSummary sum =
        summarize_phases(&words[static_cast<size_t>(op) * kPhaseCalls * kPhaseMarks], kPhaseCalls, kPhaseMarks);
    if (sum.calls == 0) continue;
    std::string line;
    for (const PhaseStep& st : sum.steps) {
      char item[64];
      std::snprintf(item, sizeof(item), " %d>%d %lld (%zu)", st.from, st.to, st.cycles, st.calls);
      line += item;
    }
    // Rows are kept per operation by epoch, which every operation shares:
    // they may be old or of another kernel of the same operation.
    std::fprintf(stderr, "arnorm phase clock, rank %d, %s, %zu calls recorded, median cycles (calls):%s; total %lld\n",
                 comm->rank, op_code_name(op), sum.calls, line.c_str(), sum.total);
  }
}

}  // namespace arnorm
