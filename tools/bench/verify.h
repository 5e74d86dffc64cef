// Exact verification of all-reduce results.
//
// Inputs are "verifiable": element i of rank r is an integer in [-4, 4] drawn
// from a hash of (seed, r, i). Every partial sum of up to 8 such values is an
// integer in [-32, 32], exactly representable in fp32, fp16 and bf16, so every
// summation order, every algorithm and every rank must produce the same bits,
// and the expected result is computed exactly on the device instead of being
// compared with a tolerance. Zero is always +0 (no input is -0, and x + -x
// rounds to +0), so bitwise comparison is sound.
#ifndef ARNORM_TOOLS_BENCH_VERIFY_H
#define ARNORM_TOOLS_BENCH_VERIFY_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "arnorm/arnorm.h"

namespace arnorm_bench {

// Bytes after the output that a check also requires untouched (0xFF).
constexpr size_t kGuardBytes = 4096;

// Writes rank `rank`'s verifiable input for `seed` into `count` elements.
int fill_verifiable(void* buf, size_t count, arnormDataType_t dtype, int rank, uint64_t seed,
                    cudaStream_t stream);

// Fills `bytes` bytes with 0xFF: NaN in fp32, fp16 and bf16, so an element
// the operation never wrote cannot pass as a result.
int poison(void* buf, size_t bytes, cudaStream_t stream);

// `input` and `output` are disjoint, or equal for an in-place call.
struct AllReduceCheck {
  const void* input;   // this rank's input, as fill_verifiable wrote it
  const void* output;  // followed by kGuardBytes poisoned bytes
  size_t count;
  arnormDataType_t dtype;
  int rank;
  int world_size;
  uint64_t seed;  // the seed every rank filled its input with
  // The inputs came from fill_zero_sum (they sum to zero over the ranks):
  // every output element must be +0, however many times the call summed the
  // buffer into itself in place. The input is not checked then.
  bool zero_sum = false;
};

// *wrong = output elements whose bits differ from the exact sum over all
// ranks + input elements the operation modified (not counted in place,
// where the input is the output) + guard bytes overwritten.
// `counter` is one device unsigned long long of scratch. Synchronizes
// `stream`. Returns non-zero only when the check itself could not run.
int count_allreduce_errors(const AllReduceCheck& check, unsigned long long* counter,
                           cudaStream_t stream, uint64_t* wrong);

}  // namespace arnorm_bench

#endif  // ARNORM_TOOLS_BENCH_VERIFY_H
