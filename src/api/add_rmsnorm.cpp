// arnormAllReduceAddRmsNorm: validate, resolve the algorithm, then one fused
// kernel per workspace-sized chunk of rows, or NCCL followed by the norm.
#include "comm/communicator.h"
#include "comm/nccl_calls.h"
#include "core/dtype.h"
#include "core/plan.h"
#include "core/selection.h"
#include "core/status.h"
#include "core/validate.h"
#include "device/launch.h"

namespace arnorm {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0; }

AddRmsNormLaunch base_launch(const arnormComm* comm, const arnormAddRmsNormArgs_t& a, arnormAlgorithm_t algo,
                             bool pipelined = false) {
  AddRmsNormLaunch l{};
  // (Its own op code for the pipelined one-shot: an error names that route,
  // and a timing build keeps its phase marks apart from the split kernel's.)
  l.params.sync = comm->sync_params(algo == ARNORM_ALGO_TWOSHOT ? kOpFusedTwoShot
                                    : pipelined                 ? kOpFusedOneShotPipelined
                                                                : kOpFusedOneShot);
  l.params.hidden = a.hidden;
  l.params.eps = a.epsilon;
  l.params.weight = a.weight;
  l.algo = algo;
  l.pdl = comm->pdl;
  l.gpu_share = comm->gpu_share;
  l.dtype = a.dtype;
  l.weight_dtype = a.weight_dtype;
  // The vector path needs whole 8-element groups per row and aligned rows;
  // the choice changes only how elements are fetched, never a result bit.
  l.vectorized = a.hidden % 8 == 0 && aligned16(a.input) && aligned16(a.out) && aligned16(a.weight) &&
                 (!a.residual || aligned16(a.residual)) && (!a.residual_out || aligned16(a.residual_out));
  return l;
}

void point_at_rows(const arnormAddRmsNormArgs_t& a, size_t first_row, size_t rows, FusedParams* p) {
  const size_t off = first_row * a.hidden * dtype_size(a.dtype);
  auto at = [off](const void* base) { return base ? static_cast<const char*>(base) + off : nullptr; };
  p->in = at(a.input);
  p->residual = at(a.residual);
  p->residual_out = const_cast<char*>(at(a.residual_out));
  p->out = const_cast<char*>(at(a.out));
  p->rows = rows;
}

// The route of a peer-memory call that resolved to `algo` (AUTO's one-shot
// may still become two-shot when a row does not fit its region); fails, as
// the call would, when one row does not fit the workspace at all.
arnormStatus_t route_peer(const arnormComm* comm, arnormAlgorithm_t requested, arnormAlgorithm_t algo, size_t tokens,
                          size_t hidden, arnormDataType_t dtype, const char* op, FusedRoute* route) {
  const size_t es = dtype_size(dtype);
  const bool may_fall_back = requested == ARNORM_ALGO_AUTO && comm->forced == ARNORM_ALGO_AUTO;
  const uint64_t bytes = static_cast<uint64_t>(tokens) * hidden * es;
  const SelectionContext ctx = comm->selection_context();
  *route = plan_fused_route(algo, may_fall_back, comm->layout, comm->max_blocks, hidden, es, oneshot_uses_ll(ctx, bytes),
                            twoshot_uses_ll(ctx, bytes), fused_oneshot_pipelined(ctx, bytes));
  if (route->rows_per_chunk == 0) {
    return ARNORM_FAIL(ARNORM_ERROR_UNSUPPORTED,
                       "%s: one row of hidden %zu does not fit the %zu-byte workspace with %s; create the "
                       "communicator with a larger workspace_bytes",
                       op, hidden, comm->layout.total_bytes, arnormAlgorithmName(route->algo));
  }
  return ARNORM_SUCCESS;
}

arnormStatus_t run_peer(arnormComm* comm, const arnormAddRmsNormArgs_t& a, arnormAlgorithm_t algo,
                        cudaStream_t stream) {
  const size_t es = dtype_size(a.dtype);
  FusedRoute route;
  ARNORM_TRY(route_peer(comm, a.algo, algo, a.tokens, a.hidden, a.dtype, "arnormAllReduceAddRmsNorm", &route));
  algo = route.algo;
  const size_t per_chunk = route.rows_per_chunk;
  AddRmsNormLaunch l = base_launch(comm, a, algo, route.pipelined);
  l.ll = route.ll;
  l.pipelined = route.pipelined;
  // The pipelined one-shot runs on the two-shot's geometry and row slots.
  const arnormAlgorithm_t shape = route.pipelined ? ARNORM_ALGO_TWOSHOT : algo;
  l.params.cluster = route.cluster;
  l.wide = comm->fused_wide && algo == ARNORM_ALGO_ONESHOT && fused_wide(route.cluster, a.hidden, l.vectorized, comm->world_size);
  l.params.lag = comm->fused_lag;
  l.params.ahead = comm->fused_ahead;
  l.params.epilogue_groups = comm->fused_pairs ? fused_epilogue_groups(a.hidden, es) : 1;
  if (shape == ARNORM_ALGO_TWOSHOT && !route.ll && a.tokens > per_chunk) {
    // More rows than the region holds: one kernel cycling through row slots.
    const FusedGeometry g = plan_fused_chunk(shape, comm->layout, a.tokens, a.hidden);
    const size_t G = fused_rows_per_step(a.hidden, es);
    const size_t slots = plan_fused_ring_slots(a.tokens, g, per_chunk, G, comm->fused_lag, comm->fused_ring_slots);
    if (slots > 0) {
      point_at_rows(a, 0, a.tokens, &l.params);
      l.params.rows_per_cta = g.rows_per_cta;
      l.params.ring_slots = slots;
      l.params.ring_total = slots * static_cast<size_t>(g.blocks);
      l.params.ring_publish = plan_fused_ring_publish(slots, G, comm->fused_lag, comm->fused_ring_publish);
      l.blocks = g.blocks;
      return launch_add_rmsnorm(l, stream);
    }
  }
  for (size_t first = 0; first < a.tokens; first += per_chunk) {
    const size_t rows = std::min(per_chunk, a.tokens - first);
    point_at_rows(a, first, rows, &l.params);
    if (l.params.cluster > 0) {
      // A WIDE CTA holds a whole row, as a cluster does.
      l.blocks = plan_fused_split_blocks(rows, a.hidden, l.wide ? 1 : l.params.cluster, comm->max_blocks);
    } else {
      const FusedGeometry g = plan_fused_chunk(shape, comm->layout, rows, a.hidden);
      l.params.rows_per_cta = g.rows_per_cta;
      l.params.ring_slots = g.rows_per_cta;  // a slot per row: slot = row
      l.params.ring_total = rows;
      l.params.ring_publish = 1;
      l.blocks = g.blocks;
    }
    ARNORM_TRY(launch_add_rmsnorm(l, stream));
  }
  return ARNORM_SUCCESS;
}

// Without peer memory: NCCL sums into out, then the same epilogue reads
// them back from out (each thread rewrites only elements it has read).
arnormStatus_t run_nccl(arnormComm* comm, const arnormAddRmsNormArgs_t& a, cudaStream_t stream, bool capturing) {
  ARNORM_TRY(nccl_all_reduce(comm, a.input, a.out, a.tokens * a.hidden, a.dtype, stream, capturing,
                             "arnormAllReduceAddRmsNorm"));
  AddRmsNormLaunch l = base_launch(comm, a, ARNORM_ALGO_NCCL);
  point_at_rows(a, 0, a.tokens, &l.params);
  l.params.in = a.out;
  l.blocks = static_cast<int>(std::min<size_t>(a.tokens, 65535));
  return launch_add_rmsnorm(l, stream);
}

}  // namespace
}  // namespace arnorm

extern "C" arnormStatus_t arnormSelectAlgorithmAddRmsNorm(arnormComm_t comm, size_t tokens, size_t hidden,
                                                          arnormDataType_t dtype, arnormAlgorithm_t* algo) {
  return arnorm::guarded("arnormSelectAlgorithmAddRmsNorm", [&]() -> arnormStatus_t {
    using namespace arnorm;
    clear_last_error();
    if (comm == nullptr || algo == nullptr || !dtype_valid(dtype)) {
      return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT,
                         "arnormSelectAlgorithmAddRmsNorm: comm and algo must be non-NULL and dtype valid");
    }
    arnormAlgorithm_t resolved = ARNORM_ALGO_AUTO;
    ARNORM_TRY(resolve_algorithm(comm->table, comm->selection_context(), Op::kAddRmsNorm, ARNORM_ALGO_AUTO,
                                 static_cast<uint64_t>(tokens) * hidden * dtype_size(dtype), &resolved));
    // The algorithm that would run, not only the table's pick.
    if (resolved != ARNORM_ALGO_NCCL && hidden > 0) {
      FusedRoute route;
      ARNORM_TRY(route_peer(comm, ARNORM_ALGO_AUTO, resolved, tokens, hidden, dtype, "arnormSelectAlgorithmAddRmsNorm",
                            &route));
      resolved = route.algo;
    }
    *algo = resolved;
    return ARNORM_SUCCESS;
  });
}

extern "C" arnormStatus_t arnormAllReduceAddRmsNorm(arnormComm_t comm, const arnormAddRmsNormArgs_t* args,
                                                    cudaStream_t stream) {
  return arnorm::guarded("arnormAllReduceAddRmsNorm", [&]() -> arnormStatus_t {
    using namespace arnorm;
    clear_last_error();
    if (comm == nullptr) return ARNORM_FAIL(ARNORM_ERROR_INVALID_ARGUMENT, "arnormAllReduceAddRmsNorm: comm is NULL");
    const ExclusiveCall exclusive(comm);
    if (!exclusive.held()) return concurrent_call_error("arnormAllReduceAddRmsNorm");
    ARNORM_TRY(check_async_error(comm, "arnormAllReduceAddRmsNorm"));
    DeviceGuard guard(comm->device);
    if (!guard.ok()) {
      return ARNORM_FAIL(ARNORM_ERROR_CUDA, "arnormAllReduceAddRmsNorm: cannot select device %d", comm->device);
    }
    ARNORM_TRY(validate_add_rmsnorm(args, stream, comm->device, cuda_memory_inspector()));
    const arnormAddRmsNormArgs_t& a = *args;
    if (a.tokens == 0) return ARNORM_SUCCESS;
    arnormAlgorithm_t algo = ARNORM_ALGO_AUTO;
    ARNORM_TRY(resolve_algorithm(comm->table, comm->selection_context(), Op::kAddRmsNorm, a.algo,
                                 static_cast<uint64_t>(a.tokens) * a.hidden * dtype_size(a.dtype), &algo));
    CallStream cs;
    ARNORM_TRY(order_after_previous_call(comm, stream, &cs));
    const arnormStatus_t issued =
        algo == ARNORM_ALGO_NCCL ? run_nccl(comm, a, stream, cs.capturing) : run_peer(comm, a, algo, stream);
    return note_call_issued(comm, cs, issued);
  });
}
