// Plain values a kernel receives by value. The host communicator owns every
// resource these point at. Compiles for host and device.
#pragma once

#include <cstdint>

#include "core/workspace_layout.h"

namespace arnorm {

// Operation codes, reported in the error record of a timed-out wait.
enum OpCode : int32_t {
  kOpNone = 0,
  kOpAllReduceOneShot = 1,
  kOpAllReduceTwoShot = 2,
  kOpFusedOneShot = 3,
  kOpFusedTwoShot = 4,
  kOpFusedOneShotPipelined = 5,  // the fused one-shot over the two-shot's pipeline (2 ranks)
};

// Lives in mapped pinned host memory: a kernel writes it when a wait times
// out, the host reads it before every call without synchronising. `status`
// is written last (after a system fence), so a non-zero status means the
// other fields are complete.
struct ErrorRecord {
  int32_t status;  // arnormStatus_t; 0 while no error
  int32_t op;      // OpCode
  int32_t rank;    // the rank that gave up waiting
  int32_t peer;    // the rank it waited for
  uint64_t epoch;  // the call's epoch
};

// What every synchronising kernel needs: where each rank's workspace is
// mapped in this process, and how long to wait.
struct SyncParams {
  // This rank's call counters and control block (in ws[rank]), computed by
  // the host, so that a call's first loads need no select over ws by rank;
  // nullptr on a communicator without peer memory.
  uint64_t* epochs;
  ControlBlock* control;
  char* ws[kMaxRanks];  // workspace base of rank r as mapped here (ws[rank] is local)
  WorkspaceLayout layout;
  int rank;
  int world;
  uint64_t timeout_ns;
  ErrorRecord* error;  // device alias of the mapped host record
  int32_t op;          // OpCode of this launch
  // PHASE CLOCK rows (device/phase_clock.cuh): set only in a build with
  // ARNORM_PHASE_TIMING; nullptr otherwise.
  unsigned long long* phase_clock;
};

// PHASE CLOCK buffer: kPhaseMarks clock64 readings per call, kPhaseCalls
// calls (by epoch) per OpCode, OpCodes 0..kOpFusedOneShotPipelined.
constexpr int kPhaseMarks = 12;
constexpr int kPhaseCalls = 64;
constexpr int kPhaseOps = kOpFusedOneShotPipelined + 1;
constexpr size_t kPhaseClockWords = size_t{kPhaseOps} * kPhaseCalls * kPhaseMarks;

struct AllReduceParams {
  SyncParams sync;
  const void* in;  // this chunk of the caller's input
  void* out;       // this chunk of the caller's output (may equal in)
  size_t count;    // elements in this chunk
};

// All-reduce + residual add + RMSNorm over `rows` rows of `hidden` elements
// (this chunk; pointers already offset to its first row).
struct FusedParams {
  SyncParams sync;
  const void* in;
  const void* residual;  // nullptr: no residual (h = s)
  void* residual_out;    // nullptr: h not stored (may equal residual)
  const void* weight;    // gamma, `hidden` elements of the weight type
  void* out;
  size_t rows;
  size_t hidden;
  float eps;
  size_t rows_per_cta;  // CTA b owns rows [b*rows_per_cta, (b+1)*rows_per_cta)
  int cluster;          // one-shot: CTAs per row (split epilogue); 0 = one CTA owns rows_per_cta rows
  int lag;              // two-shot over sentinel units: pipeline steps between push and reduce
  int ahead;            // two-shot over sentinel units: steps the movers may lead the epilogue by, beyond lag
  // Fused two-shot over sentinel units: row slots per CTA in the region
  // (CTA b's i-th row uses slot b * ring_slots + i % ring_slots; RING
  // PROGRESS gates reuse) and slots in all (blocks * ring_slots).
  size_t ring_slots;
  size_t ring_total;
  size_t ring_publish;  // rows between RING PROGRESS publications (a multiple of the step's rows)
  // Fused two-shot over sentinel units: rows its epilogue takes at once
  // (1 or 2, fused_epilogue_groups in core/plan.h; picks the kernel instance).
  int epilogue_groups;
};

}  // namespace arnorm
