// arnormAllReduce: validate, resolve the algorithm, then either one NCCL
// call or one kernel per workspace-sized chunk.
#include "comm/communicator.h"
#include "comm/nccl_calls.h"
#include "core/dtype.h"
#include "core/plan.h"
#include "core/status.h"
#include "core/validate.h"
#include "device/launch.h"

namespace arnorm {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0; }

arnormStatus_t run_peer_allreduce(arnormComm* comm, const AllReduceCall& call, arnormAlgorithm_t algo) {
  const size_t es = dtype_size(call.dtype);
  const uint64_t bytes = call.count * es;
  const bool ll = algo == ARNORM_ALGO_TWOSHOT ? twoshot_uses_ll(comm->selection_context(), bytes)
                                              : oneshot_uses_ll(comm->selection_context(), bytes);
  const ChunkPlan plan = plan_chunks(algo, comm->layout, call.count, es, ll);
  // Chunk starts are multiples of kElemAlign elements, so 16-byte alignment
  // of the caller's pointers holds for every chunk.
  const bool vec = aligned16(call.sendbuf) && aligned16(call.recvbuf);
  AllReduceLaunch l{};
  l.params.sync = comm->sync_params(algo == ARNORM_ALGO_ONESHOT ? kOpAllReduceOneShot : kOpAllReduceTwoShot);
  l.algo = algo;
  l.ll = ll;
  l.pdl = comm->pdl;
  l.dtype = call.dtype;
  l.vectorized = vec;
  for (size_t c = 0; c < plan.num_chunks; ++c) {
    const size_t first = c * plan.chunk_elems;
    const size_t n = std::min(plan.chunk_elems, call.count - first);
    l.params.in = static_cast<const char*>(call.sendbuf) + first * es;
    l.params.out = static_cast<char*>(call.recvbuf) + first * es;
    l.params.count = n;
    l.blocks = plan_blocks(algo, n, es, comm->world_size, comm->max_blocks);
    ARNORM_TRY(launch_allreduce(l, call.stream));
  }
  return ARNORM_SUCCESS;
}

}  // namespace
}  // namespace arnorm

extern "C" arnormStatus_t arnormSelectAlgorithm(arnormComm_t comm, size_t count, arnormDataType_t dtype,
                                                arnormAlgorithm_t* algo) {
  return arnorm::guarded("arnormSelectAlgorithm", [&]() -> arnormStatus_t {
    using namespace arnorm;
    clear_last_error();
    if (comm == nullptr || algo == nullptr || !dtype_valid(dtype)) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "arnormSelectAlgorithm: comm and algo must be non-NULL and dtype valid");
    }
    return resolve_algorithm(comm->table, comm->selection_context(), Op::kAllReduce, ARNORM_ALGO_AUTO,
                             static_cast<uint64_t>(count) * dtype_size(dtype), algo);
  });
}

extern "C" arnormStatus_t arnormAllReduce(arnormComm_t comm, const void* sendbuf, void* recvbuf, size_t count,
                                          arnormDataType_t dtype, arnormAlgorithm_t algo, cudaStream_t stream) {
  return arnorm::guarded("arnormAllReduce", [&]() -> arnormStatus_t {
    using namespace arnorm;
    clear_last_error();
    if (comm == nullptr) return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "arnormAllReduce: comm is NULL");
    const ExclusiveCall exclusive(comm);
    if (!exclusive.held()) return concurrent_call_error("arnormAllReduce");
    ARNORM_TRY(check_async_error(comm, "arnormAllReduce"));
    DeviceGuard guard(comm->device);
    if (!guard.ok()) return ARNORM_FAIL(ARNORM_ERROR_CUDA, "arnormAllReduce: cannot select device %d", comm->device);
    const AllReduceCall call{sendbuf, recvbuf, count, dtype, algo, stream};
    ARNORM_TRY(validate_allreduce(call, comm->device, cuda_memory_inspector()));
    if (count == 0) return ARNORM_SUCCESS;
    arnormAlgorithm_t chosen = ARNORM_ALGO_AUTO;
    ARNORM_TRY(resolve_algorithm(comm->table, comm->selection_context(), Op::kAllReduce, algo,
                                 static_cast<uint64_t>(count) * dtype_size(dtype), &chosen));
    CallStream cs;
    ARNORM_TRY(order_after_previous_call(comm, stream, &cs));
    const arnormStatus_t issued =
        chosen == ARNORM_ALGO_NCCL
            ? nccl_all_reduce(comm, sendbuf, recvbuf, count, dtype, stream, cs.capturing, "arnormAllReduce")
            : run_peer_allreduce(comm, call, chosen);
    return note_call_issued(comm, cs, issued);
  });
}
