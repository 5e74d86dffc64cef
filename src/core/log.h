// LOG: what the library writes to stderr of its own accord, one line per
// event, at the level ARNORM_DEBUG sets (core/env_knobs.h): NONE, WARN (the
// default: what changes speed or the promises of arnorm.h, such as a
// communicator that runs on NCCL), INFO (also each communicator's settings).
// Creation logs; eager operations never do (they are on the hot path, and
// report through status codes). A call under graph capture may log at INFO
// (CAPTURE ORDER, comm/communicator.h): capture is set-up time.
#pragma once

#include <cstdint>
#include <string>

namespace arnorm {

enum class LogLevel : int32_t { kNone = 0, kWarn = 1, kInfo = 2 };

// Parses "none", "warn", "info" (case-insensitive).
bool log_level_from_name(const std::string& name, LogLevel* out);

// Writes "arnorm <LEVEL> <text>\n" to stderr in one write when `level` is
// at or below `allowed`.
void log_line(LogLevel allowed, LogLevel level, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

}  // namespace arnorm
