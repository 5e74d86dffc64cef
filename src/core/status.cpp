#include "core/status.h"

#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace arnorm {

namespace {
thread_local std::string t_last_error;
}

std::string to_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string strprintf(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(&out[0], out.size() + 1, fmt, args);
  va_end(args);
  return out;
}

arnormStatus_t fail_at(arnormStatus_t status, const char* file, int line, const std::string& message) {
  const char* base = std::strstr(file, "src/");
  t_last_error = message + strprintf(" [%s:%d]", base ? base : file, line);
  return status;
}

arnormStatus_t restore_last_error(arnormStatus_t status, const std::string& message) {
  t_last_error = message;
  return status;
}

void clear_last_error() { t_last_error.clear(); }

const std::string& last_error() { return t_last_error; }

}  // namespace arnorm

extern "C" const char* arnormGetLastErrorString(void) { return arnorm::last_error().c_str(); }

extern "C" arnormStatus_t arnormGetVersion(int* version) {
  arnorm::clear_last_error();
  if (version == nullptr) return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "arnormGetVersion: version is NULL");
  *version = arnorm::kVersionCode;
  return ARNORM_SUCCESS;
}

extern "C" const char* arnormGetErrorName(arnormStatus_t status) {
  switch (status) {
    case ARNORM_SUCCESS: return "ARNORM_SUCCESS";
    case ARNORM_ERROR_INVALID_ARGUMENT: return "ARNORM_ERROR_INVALID_ARGUMENT";
    case ARNORM_ERROR_CUDA: return "ARNORM_ERROR_CUDA";
    case ARNORM_ERROR_NCCL: return "ARNORM_ERROR_NCCL";
    case ARNORM_ERROR_BOOTSTRAP: return "ARNORM_ERROR_BOOTSTRAP";
    case ARNORM_ERROR_PEER_TIMEOUT: return "ARNORM_ERROR_PEER_TIMEOUT";
    case ARNORM_ERROR_REMOTE: return "ARNORM_ERROR_REMOTE";
    case ARNORM_ERROR_UNSUPPORTED: return "ARNORM_ERROR_UNSUPPORTED";
    case ARNORM_ERROR_OUT_OF_MEMORY: return "ARNORM_ERROR_OUT_OF_MEMORY";
    case ARNORM_ERROR_INTERNAL: return "ARNORM_ERROR_INTERNAL";
    case ARNORM_ERROR_INVALID_USAGE: return "ARNORM_ERROR_INVALID_USAGE";
  }
  return "ARNORM_ERROR_UNKNOWN";
}
