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

// Arguments of a fused call: activations x (tokens x hidden, this rank's
// part), residual and residual_out (either may be nullptr), weight gamma
// (hidden elements of weight_dtype), out y, and the model's epsilon; algo
// stays AUTO until set.
inline arnormAddRmsNormArgs_t add_rmsnorm_args(const void* input, const void* residual, void* residual_out,
                                               const void* weight, void* out, size_t tokens, size_t hidden,
                                               arnormDataType_t dtype, arnormDataType_t weight_dtype,
                                               float epsilon) {
  arnormAddRmsNormArgs_t a = ARNORM_ADD_RMSNORM_ARGS_INIT;
  a.input = input;
  a.residual = residual;
  a.residual_out = residual_out;
  a.weight = weight;
  a.out = out;
  a.tokens = tokens;
  a.hidden = hidden;
  a.dtype = dtype;
  a.weight_dtype = weight_dtype;
  a.epsilon = epsilon;
  return a;
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

  // Empty while the peer-memory algorithms serve (arnormCommGetFallbackReason).
  std::string fallback_reason() const {
    const char* r = nullptr;
    check(arnormCommGetFallbackReason(comm_, &r));
    return r;
  }

  void all_reduce(const void* send, void* recv, size_t count, arnormDataType_t dtype,
                  cudaStream_t stream, arnormAlgorithm_t algo = ARNORM_ALGO_AUTO) const {
    check(arnormAllReduce(comm_, send, recv, count, dtype, algo, stream));
  }

  // The fused all-reduce + residual add + RMSNorm (semantics, aliasing and
  // batch invariance: arnormAllReduceAddRmsNorm in arnorm.h). Start `args`
  // from add_rmsnorm_args() or ARNORM_ADD_RMSNORM_ARGS_INIT.
  void all_reduce_add_rmsnorm(const arnormAddRmsNormArgs_t& args, cudaStream_t stream) const {
    check(arnormAllReduceAddRmsNorm(comm_, &args, stream));
  }

  // The algorithm AUTO resolves to for a plain all-reduce of this size.
  arnormAlgorithm_t select_algorithm(size_t count, arnormDataType_t dtype) const {
    arnormAlgorithm_t a = ARNORM_ALGO_AUTO;
    check(arnormSelectAlgorithm(comm_, count, dtype, &a));
    return a;
  }

  // The algorithm a fused AUTO call of this shape runs.
  arnormAlgorithm_t select_algorithm_add_rmsnorm(size_t tokens, size_t hidden, arnormDataType_t dtype) const {
    arnormAlgorithm_t a = ARNORM_ALGO_AUTO;
    check(arnormSelectAlgorithmAddRmsNorm(comm_, tokens, hidden, dtype, &a));
    return a;
  }

  // Throws the asynchronous error recorded since creation, if any.
  void check_async() const { check(arnormCommGetAsyncError(comm_)); }

 private:
  arnormComm_t comm_ = nullptr;
};

}  // namespace arnorm

#endif  // ARNORM_ARNORM_HPP
