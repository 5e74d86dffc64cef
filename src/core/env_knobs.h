// ENVIRONMENT KNOBS: the ARNORM_* variables a communicator reads at creation
// (README, "Environment"). Parsed strictly: a value the variable does not
// accept is an error that names the variable and what it accepts, never a
// silent default or clamp. An empty value counts as unset. (The tuning file,
// ARNORM_TUNING_FILE, is read with the table; ARNORM_TEST_FAULT by the tests'
// fault injection.)
#pragma once

#include <cstdint>
#include <functional>

#include "arnorm/arnorm.h"
#include "core/log.h"
#include "core/selection.h"

namespace arnorm {

struct EnvKnobs {
  arnormAlgorithm_t forced = ARNORM_ALGO_AUTO;  // ARNORM_ALGO
  Protocol forced_protocol = Protocol::kAuto;   // ARNORM_PROTOCOL
  double timeout_seconds = 0;                   // ARNORM_TIMEOUT_SECONDS, [0.001, 86400]; 0: unset
  int fused_lag = 1;                            // ARNORM_FUSED_LAG, 1..8
  int fused_ahead = 2;                          // ARNORM_FUSED_AHEAD, 1..64
  bool fused_pairs = true;                      // ARNORM_FUSED_PAIRS
  bool fused_wide = true;                       // ARNORM_FUSED_WIDE
  uint64_t fused_ring_slots = 0;                // ARNORM_FUSED_RING_SLOTS; 0: the planner's
  uint64_t fused_ring_publish = 0;              // ARNORM_FUSED_RING_PUBLISH; 0: the planner's
  uint64_t fused_pipeline_bytes = kFusedOneShotPipelineMinBytes;  // ARNORM_FUSED_PIPELINE_BYTES
  bool pdl = true;                              // ARNORM_PDL
  bool allow_shared_gpu = false;                // ARNORM_ALLOW_SHARED_GPU (tests only)
  LogLevel log_level = LogLevel::kWarn;         // ARNORM_DEBUG (core/log.h)
};

// The value of an environment variable, or nullptr (std::getenv in the
// library; a map in the tests).
using EnvLookup = std::function<const char*(const char*)>;

// Fills *knobs from `lookup`; on the first bad value returns
// ARNORM_ERROR_INVALID_ARGUMENT with a message naming it (`op` first).
arnormStatus_t read_env_knobs(const EnvLookup& lookup, const char* op, EnvKnobs* knobs);

}  // namespace arnorm
