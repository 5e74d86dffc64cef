#include "core/env_knobs.h"

#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/status.h"

namespace arnorm {
namespace {

// Whole decimal number in [lo, hi], nothing else in the string.
bool parse_integer(const char* v, unsigned long long lo, unsigned long long hi, unsigned long long* out) {
  if (*v < '0' || *v > '9') return false;  // no sign, no space
  errno = 0;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(v, &end, 10);
  if (errno != 0 || *end != '\0' || x < lo || x > hi) return false;
  *out = x;
  return true;
}

bool parse_switch(const char* v, bool* out) {
  const std::string s = to_lower(v);
  if (s == "1" || s == "true" || s == "on" || s == "yes") {
    *out = true;
    return true;
  }
  if (s == "0" || s == "false" || s == "off" || s == "no") {
    *out = false;
    return true;
  }
  return false;
}

}  // namespace

arnormStatus_t read_env_knobs(const EnvLookup& lookup, const char* op, EnvKnobs* k) {
  *k = EnvKnobs{};
  auto value = [&](const char* name) -> const char* {
    const char* v = lookup(name);
    return v != nullptr && *v != '\0' ? v : nullptr;
  };
  auto integer = [&](const char* name, unsigned long long lo, unsigned long long hi, auto* field) {
    const char* v = value(name);
    unsigned long long x = 0;
    if (v == nullptr) return ARNORM_SUCCESS;
    if (!parse_integer(v, lo, hi, &x)) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: %s='%s' is not a whole number in [%llu, %llu]", op,
                         name, v, lo, hi);
    }
    *field = static_cast<std::remove_pointer_t<decltype(field)>>(x);
    return ARNORM_SUCCESS;
  };
  auto on_off = [&](const char* name, bool* field) {
    const char* v = value(name);
    if (v == nullptr || parse_switch(v, field)) return ARNORM_SUCCESS;
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: %s='%s' is not 0 or 1 (or off/on, false/true, no/yes)",
                       op, name, v);
  };
  if (const char* v = value("ARNORM_ALGO"); v != nullptr && !algorithm_from_name(v, &k->forced)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: ARNORM_ALGO='%s' is not one of auto, oneshot, twoshot, nccl",
                       op, v);
  }
  if (const char* v = value("ARNORM_PROTOCOL"); v != nullptr && !protocol_from_name(v, &k->forced_protocol)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: ARNORM_PROTOCOL='%s' is not one of auto, ll, sentinel", op,
                       v);
  }
  if (const char* v = value("ARNORM_TIMEOUT_SECONDS")) {
    // from_chars: no sign, no space, no hex, whatever the locale's decimal point.
    double t = 0;
    const char* end = v + std::strlen(v);
    const auto parsed = std::from_chars(v, end, t);
    if (parsed.ec != std::errc() || parsed.ptr != end || !(t >= 0.001) || t > 86400) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "%s: ARNORM_TIMEOUT_SECONDS='%s' is not a number of seconds in [0.001, 86400]", op, v);
    }
    k->timeout_seconds = t;
  }
  if (const char* v = value("ARNORM_DEBUG"); v != nullptr && !log_level_from_name(v, &k->log_level)) {
    return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "%s: ARNORM_DEBUG='%s' is not one of NONE, WARN, INFO", op, v);
  }
  ARNORM_TRY(integer("ARNORM_FUSED_LAG", 1, 8, &k->fused_lag));
  ARNORM_TRY(integer("ARNORM_FUSED_AHEAD", 1, 64, &k->fused_ahead));
  ARNORM_TRY(on_off("ARNORM_FUSED_PAIRS", &k->fused_pairs));
  ARNORM_TRY(on_off("ARNORM_FUSED_WIDE", &k->fused_wide));
  // (0: the planner's choice; the planner takes at most what fits.)
  ARNORM_TRY(integer("ARNORM_FUSED_RING_SLOTS", 0, 1ull << 20, &k->fused_ring_slots));
  ARNORM_TRY(integer("ARNORM_FUSED_RING_PUBLISH", 0, 1ull << 20, &k->fused_ring_publish));
  // (2^50: no call is that large, so no one-shot is pipelined.)
  ARNORM_TRY(integer("ARNORM_FUSED_PIPELINE_BYTES", 0, 1ull << 50, &k->fused_pipeline_bytes));
  ARNORM_TRY(on_off("ARNORM_PDL", &k->pdl));
  ARNORM_TRY(on_off("ARNORM_ALLOW_SHARED_GPU", &k->allow_shared_gpu));
  return ARNORM_SUCCESS;
}

}  // namespace arnorm
