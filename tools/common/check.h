// Error reporting shared by the tools: every CUDA/NCCL failure is printed once,
// with file:line, where it happens; callers then return a non-zero code up to
// main. Nothing here exits the process.
#ifndef ARNORM_TOOLS_CHECK_H
#define ARNORM_TOOLS_CHECK_H

#include <cuda_runtime_api.h>
#include <nccl.h>

namespace arnorm_tools {

// Identity used as the prefix of every message: "[rank N]" inside a rank that
// launch_ranks started, the program name in the launching parent. Set once,
// before any other thread exists, by launch_ranks.
void set_log_rank(int rank);
int log_rank();  // -1 outside a rank

// Prints "<prefix> file:line: what: detail" to stderr.
void report_error(const char* file, int line, const char* what, const char* detail);
// printf-style variant: "<prefix> file:line: <message>".
void report_errorf(const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

// True on success; otherwise reports the failure and returns false.
bool cuda_ok(cudaError_t err, const char* file, int line, const char* what);
bool nccl_ok(ncclResult_t res, const char* file, int line, const char* what);

}  // namespace arnorm_tools

#define TOOLS_CUDA_OK(call) ::arnorm_tools::cuda_ok((call), __FILE__, __LINE__, #call)
#define TOOLS_NCCL_OK(call) ::arnorm_tools::nccl_ok((call), __FILE__, __LINE__, #call)

// For functions returning int (0 = success): report and return 1 on failure.
#define TOOLS_CUDA_TRY(call)            \
  do {                                  \
    if (!TOOLS_CUDA_OK(call)) return 1; \
  } while (0)
#define TOOLS_NCCL_TRY(call)            \
  do {                                  \
    if (!TOOLS_NCCL_OK(call)) return 1; \
  } while (0)

#define TOOLS_ERROR(...) ::arnorm_tools::report_errorf(__FILE__, __LINE__, __VA_ARGS__)

#endif  // ARNORM_TOOLS_CHECK_H
