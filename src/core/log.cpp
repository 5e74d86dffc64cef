#include "core/log.h"

#include <cstdarg>
#include <cstdio>

#include "core/status.h"

namespace arnorm {

bool log_level_from_name(const std::string& name, LogLevel* out) {
  const std::string s = to_lower(name);
  if (s == "none") *out = LogLevel::kNone;
  else if (s == "warn") *out = LogLevel::kWarn;
  else if (s == "info") *out = LogLevel::kInfo;
  else return false;
  return true;
}

void log_line(LogLevel allowed, LogLevel level, const char* fmt, ...) {
  if (level == LogLevel::kNone || static_cast<int32_t>(level) > static_cast<int32_t>(allowed)) return;
  char text[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  // One fprintf: lines of ranks in one process do not interleave.
  std::fprintf(stderr, "arnorm %s %s\n", level == LogLevel::kWarn ? "WARN" : "INFO", text);
}

}  // namespace arnorm
