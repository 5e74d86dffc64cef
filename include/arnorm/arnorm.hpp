// Thin C++ wrapper over the C API: RAII communicator, exceptions carrying the
// status and the library's message. Header-only; links against libarnorm.
#ifndef ARNORM_ARNORM_HPP
#define ARNORM_ARNORM_HPP

#include <stdexcept>
#include <string>
#include <utility>

#include "arnorm/arnorm.h"

namespace arnorm {

class Error : public std::runtime_error {
 public:
  Error(arnormStatus_t status, const std::string& what)
      : std::runtime_error(what), status_(status) {}
  arnormStatus_t status() const noexcept { return status_; }

 private:
  arnormStatus_t status_;
};

inline void check(arnormStatus_t status) {
  if (status != ARNORM_SUCCESS) {
    throw Error(status, std::string(arnormGetErrorName(status)) + ": " +
                            arnormGetLastErrorString());
  }
}

class Communicator {
 public:
  Communicator(int rank, int world_size, int device, arnormBootstrap_t bootstrap,
               const arnormConfig_t* config = nullptr) {
    check(arnormCommCreate(&comm_, rank, world_size, device, bootstrap, config));
  }
  // Adopts a communicator made through another C entry point.
  explicit Communicator(arnormComm_t comm) noexcept : comm_(comm) {}
  ~Communicator() { arnormCommDestroy(comm_); }
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  Communicator(Communicator&& o) noexcept : comm_(std::exchange(o.comm_, nullptr)) {}
  Communicator& operator=(Communicator&& o) noexcept {
    if (this != &o) {
      arnormCommDestroy(comm_);
      comm_ = std::exchange(o.comm_, nullptr);
    }
    return *this;
  }

  arnormComm_t get() const noexcept { return comm_; }

  arnormCommInfo_t info() const {
    arnormCommInfo_t i{};
    check(arnormCommGetInfo(comm_, &i));
    return i;
  }

  void all_reduce(const void* send, void* recv, size_t count, arnormDataType_t dtype,
                  cudaStream_t stream, arnormAlgorithm_t algo = ARNORM_ALGO_AUTO) const {
    check(arnormAllReduce(comm_, send, recv, count, dtype, algo, stream));
  }

  // Throws the asynchronous error a kernel recorded, if any.
  void check_async() const { check(arnormCommGetAsyncError(comm_)); }

 private:
  arnormComm_t comm_ = nullptr;
};

}  // namespace arnorm

#endif  // ARNORM_ARNORM_HPP
