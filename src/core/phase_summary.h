// PHASE CLOCK summary (device/phase_clock.cuh): turns one operation's rows
// of clock64 marks into medians per step. Pure host code, host-tested.
#pragma once

#include <cstddef>
#include <vector>

namespace arnorm {

struct PhaseStep {
  int from = 0, to = 0;   // marks: `to` is the next mark set after `from` in a call
  long long cycles = 0;   // median cycles between them
  size_t calls = 0;       // calls that had this step
};

struct PhaseSummary {
  std::vector<PhaseStep> steps;  // in the kernel's order (by median start after mark 0)
  long long total = 0;           // median cycles from mark 0 to a call's last mark
  size_t calls = 0;              // calls recorded (rows with mark 0 set)
};

// rows: `calls` rows of `marks` readings; 0 = not set. A row counts when its
// mark 0 is set; readings below mark 0 (left from an older call) are ignored.
PhaseSummary summarize_phases(const unsigned long long* rows, int calls, int marks);

}  // namespace arnorm
