// Inputs and verification of the fused all-reduce + residual add + RMSNorm.
//
// The activations are verifiable inputs (verify.h): integers in [-4, 4] per
// rank, so their sum over ranks is exact in any order. The residual is the
// same on every rank, also integers in [-4, 4]; so h = sum + residual is an
// exact integer and every algorithm must produce the same h bits. The weight
// (same on every rank) holds multiples of 1/64 in [0.5, 1.5], exact in every
// type. All algorithms share one epilogue, so their `out` bits must match too.
#ifndef ARNORM_TOOLS_BENCH_FUSED_VERIFY_H
#define ARNORM_TOOLS_BENCH_FUSED_VERIFY_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "arnorm/arnorm.h"
#include "verify.h"

namespace arnorm_bench {

// The residual for `seed`: integers in [-4, 4], the same on every rank.
int fill_shared_residual(void* buf, size_t count, arnormDataType_t dtype, uint64_t seed,
                         cudaStream_t stream);

// The weight for `seed`: `hidden` values 0.5 + k/64, k in [0, 64], of `dtype`.
int fill_weight(void* buf, size_t hidden, arnormDataType_t dtype, uint64_t seed,
                cudaStream_t stream);

// Timing input: verifiable values on ranks 0..world-2, and on the last rank
// minus their sum, so the all-reduce is exactly zero and an in-place
// residual keeps its value however often the call is replayed.
int fill_zero_sum(void* buf, size_t count, arnormDataType_t dtype, int rank, int world,
                  uint64_t seed, cudaStream_t stream);

// One fused call's outputs and how its inputs were made.
struct FusedCheck {
  const void* out;           // tokens x hidden, followed by kGuardBytes of 0xFF
  const void* residual_out;  // tokens x hidden, followed by kGuardBytes of 0xFF
  const void* weight;        // as fill_weight(seed) wrote it
  size_t tokens;
  size_t hidden;
  arnormDataType_t dtype;
  arnormDataType_t weight_dtype;
  float epsilon;
  int world_size;
  uint64_t seed;  // fill_verifiable, fill_shared_residual and fill_weight used it
};

// Against the definition: residual_out elements whose bits differ from the
// exact h, + out elements farther from the fp64 RMSNorm of h than the
// rounding of `dtype` allows (a relative 2^-7 for half and bf16, 2^-12 for
// float; NaN is always wrong), + guard bytes overwritten after either output.
// `counter` is one device unsigned long long of scratch. Synchronizes
// `stream`. Non-zero only when the check itself could not run.
int count_fused_reference_errors(const FusedCheck& check, unsigned long long* counter,
                                 cudaStream_t stream, uint64_t* wrong);

// Bitwise against a reference run: elements of out that differ from
// ref_out, + elements of residual_out that differ from ref_residual, + guard
// bytes overwritten after either output.
int count_fused_differences(const FusedCheck& check, const void* ref_out, const void* ref_residual,
                            unsigned long long* counter, cudaStream_t stream, uint64_t* wrong);

// Order-independent 64-bit hash of the bits of `count` elements of `dtype`.
int hash_elements(const void* buf, size_t count, arnormDataType_t dtype,
                  unsigned long long* counter, cudaStream_t stream, uint64_t* hash);

}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_FUSED_VERIFY_H
