#include "check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

namespace arnorm_tools {
namespace {

int g_log_rank = -1;

// "tools/bench/x.cpp" rather than the build machine's absolute path.
const char* short_path(const char* file) {
  const char* p = strstr(file, "tools/");
  return p != nullptr ? p : file;
}

// One write(2) per message, so lines from concurrent ranks do not interleave.
void emit(const char* file, int line, const char* fmt, va_list ap) {
  char msg[1536];
  vsnprintf(msg, sizeof(msg), fmt, ap);  // a longer message is cut short
  char out[2048];
  const int n = g_log_rank >= 0
                    ? snprintf(out, sizeof(out), "[rank %d] %s:%d: %s\n", g_log_rank,
                               short_path(file), line, msg)
                    : snprintf(out, sizeof(out), "%s: %s:%d: %s\n", program_invocation_short_name,
                               short_path(file), line, msg);
  if (n <= 0) return;
  const size_t len =
      static_cast<size_t>(n) < sizeof(out) ? static_cast<size_t>(n) : sizeof(out) - 1;
  out[len - 1] = '\n';
  fflush(stderr);
  const ssize_t written = write(STDERR_FILENO, out, len);
  (void)written;  // nowhere left to report a failed write to stderr
}

}  // namespace

void set_log_rank(int rank) { g_log_rank = rank; }
int log_rank() { return g_log_rank; }

void report_error(const char* file, int line, const char* what, const char* detail) {
  report_errorf(file, line, "%s: %s", what, detail);
}

void report_errorf(const char* file, int line, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(file, line, fmt, ap);
  va_end(ap);
}

bool cuda_ok(cudaError_t err, const char* file, int line, const char* what) {
  if (err == cudaSuccess) return true;
  report_errorf(file, line, "%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
  return false;
}

bool nccl_ok(ncclResult_t res, const char* file, int line, const char* what) {
  if (res == ncclSuccess) return true;
  report_errorf(file, line, "%s: %s", what, ncclGetErrorString(res));
  return false;
}

}  // namespace arnorm_tools
