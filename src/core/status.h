// Error reporting inside the library: every failure path sets the calling
// thread's last-error message (what was wrong, what to do, file:line) and
// returns a status. Nothing here aborts the process.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "arnorm/arnorm.h"

namespace arnorm {

// The library's version as arnormGetVersion reports it (and creation
// compares across ranks).
constexpr int kVersionCode = ARNORM_VERSION_MAJOR * 10000 + ARNORM_VERSION_MINOR * 100 + ARNORM_VERSION_PATCH;

// ASCII lower case, for names read case-insensitively (algorithms,
// protocols, switches, log levels).
std::string to_lower(std::string s);

// printf-style formatting into a std::string.
std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Records `message` (with file:line appended) as this thread's last error and
// returns `status`, so a failure path reads `return fail(...)`.
arnormStatus_t fail_at(arnormStatus_t status, const char* file, int line, const std::string& message);

// Sets this thread's last error to an already formatted message (used to
// carry a message across cleanup that clears it).
arnormStatus_t restore_last_error(arnormStatus_t status, const std::string& message);

// Clears the thread's last error at the start of a public call.
void clear_last_error();

const std::string& last_error();

// Runs a C entry point's body. An exception (std::bad_alloc from a host
// container, say) must not cross the C ABI, where it would terminate the
// process: it becomes a status with a message instead.
template <class Body>
arnormStatus_t guarded(const char* entry, Body&& body) noexcept {
  arnormStatus_t status = ARNORM_ERROR_INTERNAL;
  const char* what = "an unknown exception";
  try {
    return body();
  } catch (const std::bad_alloc&) {
    status = ARNORM_ERROR_OUT_OF_MEMORY;
    what = "host memory ran out";
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  try {
    return fail_at(status, __FILE__, __LINE__,
                   strprintf("%s: %s; nothing more was launched by this call, which may have stopped part way "
                             "(for arnormCommCreate: the other ranks may wait in the bootstrap)",
                             entry, what));
  } catch (...) {
    return status;  // no memory even for the message
  }
}

}  // namespace arnorm

#define ARNORM_FAIL(status, ...) \
  ::arnorm::fail_at((status), __FILE__, __LINE__, ::arnorm::strprintf(__VA_ARGS__))

// Propagates a non-success status unchanged (the callee already set the message).
#define ARNORM_TRY(expr)                                  \
  do {                                                    \
    arnormStatus_t arnorm_try_status_ = (expr);           \
    if (arnorm_try_status_ != ARNORM_SUCCESS) return arnorm_try_status_; \
  } while (0)

// Turns a failing CUDA runtime call into ARNORM_ERROR_CUDA naming the call.
#define ARNORM_CUDA_TRY(expr)                                                           \
  do {                                                                                  \
    cudaError_t arnorm_cuda_err_ = (expr);                                              \
    if (arnorm_cuda_err_ != cudaSuccess) {                                              \
      return ARNORM_FAIL(ARNORM_ERROR_CUDA, "%s failed: %s (%s)", #expr,                \
                         cudaGetErrorString(arnorm_cuda_err_),                          \
                         cudaGetErrorName(arnorm_cuda_err_));                           \
    }                                                                                   \
  } while (0)
